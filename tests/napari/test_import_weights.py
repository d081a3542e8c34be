"""The model picker's "Import public weights...": a public .pth becomes a checkpoint that stains."""

import pytest
import torch

from tests.models.unet_reference import RefUnetGenerator
from tests.napari.conftest import docked_stain_widget
from vstain.models import read_card
from vstain.napari.checkpoint_picker import LOAD_CHECKPOINT
from vstain.napari.import_weights import IMPORT_WEIGHTS
from vstain.napari.model_choice import IMPORTED

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(make_napari_viewer, slide_path, checkpoint, tmp_path):
    return docked_stain_widget(make_napari_viewer, slide_path, checkpoint, tmp_path)[2]


def choose_files(monkeypatch, pth, out):
    dialog = "vstain.napari.import_weights.QFileDialog"
    monkeypatch.setattr(f"{dialog}.getOpenFileName", lambda *a, **k: (str(pth), ""))
    monkeypatch.setattr(f"{dialog}.getSaveFileName", lambda *a, **k: (str(out), ""))


def activate_import(widget):
    index = widget.model_box.findText(IMPORT_WEIGHTS)
    assert index == widget.model_box.findText(LOAD_CHECKPOINT) + 1 == widget.model_box.count() - 1
    widget.model_box.setCurrentIndex(index)
    widget.model_box.activated.emit(index)


def test_import_public_weights_selects_the_new_model_and_it_stains(
    widget, qtbot, notes, tmp_path, monkeypatch
):
    pth = tmp_path / "latest_net_G.pth"
    torch.save(RefUnetGenerator(ngf=4, num_downs=5, attention=True).state_dict(), pth)
    out = tmp_path / "bci_her2.safetensors"
    choose_files(monkeypatch, pth, out)
    activate_import(widget)
    assert widget.model_box.currentText() == "tiny"  # the old model stays while importing
    qtbot.waitUntil(lambda: widget.model_box.currentText() == "bci_her2", timeout=60_000)
    assert read_card(out).provenance["layout"] == "attention_unet_32"
    assert "Architecture: pyramid-pix2pix-unet" in widget.card_label.text()
    assert widget.warning_label.text() == IMPORTED
    assert notes[-1][0] == "info" and "attention_unet_32" in notes[-1][1]
    # the picker keeps its actions last, after the new checkpoint
    assert widget.model_box.findText("bci_her2") < widget.model_box.findText(LOAD_CHECKPOINT)

    widget.stain_view()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    (layer,) = [layer for layer in widget.viewer.layers if "vstain_store" in layer.metadata]
    assert layer.name.startswith("bci_her2")


def test_a_file_that_is_no_generator_is_a_notification(widget, qtbot, notes, tmp_path, monkeypatch):
    pth = tmp_path / "classifier.pth"
    torch.save({"fc.weight": torch.zeros(2, 8)}, pth)
    out = tmp_path / "never.safetensors"
    choose_files(monkeypatch, pth, out)
    activate_import(widget)
    qtbot.waitUntil(lambda: bool(notes), timeout=30_000)
    assert notes[-1][0] == "error" and "not a known generator layout" in notes[-1][1]
    assert widget.model_box.currentText() == "tiny" and not out.exists()
    assert widget.has_model and widget.view_button.isEnabled()
