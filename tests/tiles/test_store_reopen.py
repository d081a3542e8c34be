"""A damaged output store, reopened to resume or to view, ends in one line saying what to do."""

import json
import shutil

import pytest

from vstain.errors import SlideError, VstainError
from vstain.io import open_slide
from vstain.tiles.store import OutputSpec, OutputStore

DAMAGE = {
    "done-map deleted": lambda root: shutil.rmtree(root / "done"),
    "level deleted": lambda root: shutil.rmtree(root / "ihc" / "1"),
    "settings rewritten": lambda root: (root / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"vstain": {}}})
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_store_is_refused_when_reopened(tmp_path, damage):
    root = tmp_path / "out.zarr"
    spec = OutputSpec("ihc", "rgb", 3, background=1.0)
    OutputStore.create(
        root, shape=(1024, 1024), tile=64, specs=[spec], pixel_size=None, settings={}
    )
    DAMAGE[damage](root)
    with pytest.raises(VstainError, match="use --overwrite") as error:
        OutputStore.open(root)
    assert "\n" not in str(error.value)
    if damage == "level deleted":
        with pytest.raises(SlideError, match="level '1' cannot be opened"):
            open_slide(root)
