"""Predict-option editors: one per option with a usable default, values as edited."""

from pathlib import Path

import pytest

from vstain.models.registry import option_choices, predict_options
from vstain.models.stain_diffuser.samplers import SAMPLERS
from vstain.napari.option_widgets import OptionsPanel
from vstain.napari.stain_job import StainRequest, store_path

pytestmark = pytest.mark.gui


def test_panel_has_an_editor_per_usable_option_and_returns_edited_values(qtbot):
    panel = OptionsPanel()
    qtbot.addWidget(panel)
    defaults = {"steps": 50, "n_samples": 1, "tta": False, "eta": 0.0, "marker": None, "x": None}
    defaults["sampler"] = "ddim"
    panel.set_options(defaults, {"marker": ["ck818", "cd3"], "sampler": ["ddpm", "ddim"]})
    assert panel.values() == {
        "steps": 50,
        "n_samples": 1,
        "tta": False,
        "eta": 0.0,
        "marker": "ck818",
        "sampler": "ddim",
    }
    panel.form["steps"].native.setValue(20)  # edited as the user does, in the Qt editors
    panel.form["tta"].native.setChecked(True)
    panel.form["marker"].native.setCurrentText("cd3")
    panel.form["eta"].native.setValue(0.25)
    assert panel.values()["steps"] == 20 and panel.values()["tta"] is True
    assert panel.values()["marker"] == "cd3" and panel.values()["eta"] == 0.25
    labels = ["Steps", "N samples", "Tta", "Eta", "Marker", "Sampler"]
    assert [w.label for w in panel.form] == labels
    assert panel.form["steps"].tooltip.startswith("Sampler steps")
    panel.set_options({}, {})
    assert panel.values() == {} and panel.isHidden()


def test_diffusion_models_offer_their_samplers_and_multi_stain_its_markers():
    assert option_choices("stain-diffuser", ["cd3"]) == {"sampler": list(SAMPLERS)}
    multi = option_choices("stain-diffuser-multi", ["ck818", "cd3"])
    assert multi["marker"] == ["ck818", "cd3"] and "dpm-solver++" in multi["sampler"]
    assert option_choices("pix2pix", ["ck818"]) == {}


def test_models_without_options_show_none_and_options_name_the_store(tmp_path):
    assert predict_options("pix2pix") == {}
    request = dict(
        kind="view",
        slide=type("S", (), {"path": Path("/data/he.svs")})(),
        parts=(),
        checkpoint=Path("m.safetensors"),
        device="cpu",
        tile=512,
        batch_size=1,
        out_dir=tmp_path,
    )
    plain = store_path(StainRequest(**request), "ab" * 32)
    steps = store_path(StainRequest(**request, options={"steps": 20, "n_samples": 2}), "ab" * 32)
    assert plain.name == "he.svs.m-abababab-t512.zarr"
    assert steps.name == "he.svs.m-abababab-t512-n_samples2-steps20.zarr"
