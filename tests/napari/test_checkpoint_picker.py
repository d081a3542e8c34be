"""The plugin's checkpoint picker: shipped checkpoints, loaded files, actions."""

import pytest

from tests.napari.conftest import tiny_checkpoint
from vstain.napari.checkpoint_picker import LOAD_CHECKPOINT, CheckpointPicker
from vstain.weights import shipped_checkpoints

pytestmark = pytest.mark.gui


def test_checkpoints_come_before_the_actions_and_an_action_keeps_the_choice(qtbot, tmp_path):
    picker = CheckpointPicker()
    qtbot.addWidget(picker)
    shipped = list(shipped_checkpoints())
    assert [picker.itemText(i) for i in range(picker.count())] == [*shipped, LOAD_CHECKPOINT]
    assert picker.name == shipped[0]
    changes, ran = [], []
    picker.checkpoint_changed.connect(changes.append)
    picker.add_action("Import...", lambda: ran.append(picker.name))

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    first = tiny_checkpoint(tmp_path / "a" / "tiny.safetensors")
    second = tiny_checkpoint(tmp_path / "b" / "tiny.safetensors", seed=1)
    assert picker.add(first) and picker.add(second) and picker.add(first)
    names = [picker.itemText(i) for i in range(picker.count())]
    assert names == [*shipped, "tiny", str(second), LOAD_CHECKPOINT, "Import..."]
    assert changes == [first, second, first] and picker.checkpoint == first

    action = picker.findText("Import...")
    picker.setCurrentIndex(action)
    picker.activated.emit(action)
    assert ran == ["tiny"] and picker.checkpoint == first and changes[-1] == first

    (tmp_path / "bad.safetensors").write_bytes(b"no")
    assert not picker.add(tmp_path / "bad.safetensors")  # a notification, the choice stays
    assert picker.checkpoint == first and picker.count() == len(names)
