"""BCI-style datasets with ground truth."""

import json

import imagecodecs
import numpy as np
import pytest

from vstain.errors import CancelledError, OutputExistsError
from vstain.synth import PixelClass, SynthError, synth_dataset
from vstain.synth.dataset import SPLITS


def _names(root, kind, split):
    return sorted(p.stem for p in (root / kind / split).glob("*.*"))


def test_writes_bci_layout_with_truth(tmp_path):
    seen = []
    manifest = synth_dataset(
        tmp_path,
        n=5,
        tile=64,
        marker="ki67",
        seed=3,
        slides=2,
        slide_size=1024,
        test_fraction=0.4,
        progress=lambda *a: seen.append(a),
    )
    info = json.loads(manifest.read_text())
    assert seen[-1] == (5, 5) and len(info["tiles"]) == 5 and len(info["slides"]) == 2
    for split, count in (("train", 3), ("test", 2)):
        names = _names(tmp_path, "HE", split)
        assert len(names) == count
        assert names == _names(tmp_path, "IHC", split) == _names(tmp_path, "truth", split)
        for name in names:
            he = imagecodecs.png_decode((tmp_path / "HE" / split / f"{name}.png").read_bytes())
            ihc = imagecodecs.png_decode((tmp_path / "IHC" / split / f"{name}.png").read_bytes())
            assert he.shape == ihc.shape == (64, 64, 3) and he.dtype == np.uint8
            truth = np.load(tmp_path / "truth" / split / f"{name}.npz")
            assert truth["nuclei"].shape == (64, 64) and truth["nuclei"].dtype == np.int32
            assert truth["positive"].dtype == bool
            assert np.mean(truth["pixel_class"] != PixelClass.GLASS) >= 0.4  # tiles are tissue
            # Positive nuclei well inside the tile are listed, as positive, in the cell table.
            core = np.zeros((64, 64), bool)
            core[16:-16, 16:-16] = True  # farther in than the longest nucleus reaches
            labelled = set(np.unique(truth["nuclei"][truth["positive"] & core]).tolist()) - {0}
            listed = truth["cell_id"][truth["cell_positive"] & truth["cell_in_he"]]
            assert labelled <= set(listed.tolist())
    # Train and test tiles come from different slides.
    slides = {s: {t["slide"] for t in info["tiles"] if t["split"] == s} for s in ("train", "test")}
    assert not slides["train"] & slides["test"]


def test_refuses_to_overwrite_unless_asked(tmp_path):
    synth_dataset(tmp_path, n=1, tile=32, slides=1, slide_size=512, test_fraction=0)
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        synth_dataset(tmp_path, n=1, tile=32, slides=1, slide_size=512, test_fraction=0)
    synth_dataset(
        tmp_path, n=2, tile=32, slides=1, slide_size=512, test_fraction=0, overwrite=True, seed=1
    )
    assert len(_names(tmp_path, "HE", "train")) == 2


def test_adjacent_dataset_pairs_are_roughly_aligned(tmp_path):
    synth_dataset(
        tmp_path,
        n=2,
        tile=128,
        slides=1,
        slide_size=1024,
        test_fraction=0,
        mode="adjacent-section",
        seed=5,
    )
    for path in (tmp_path / "truth" / "train").glob("*.npz"):
        truth = np.load(path)
        assert truth["affine"].shape == (3, 3)
        keep = truth["cell_in_he"] & truth["cell_in_ihc"]
        shift = np.hypot(
            truth["cell_x"] - truth["cell_ihc_x"], truth["cell_y"] - truth["cell_ihc_y"]
        )
        assert np.median(shift[keep]) < 10  # cut around the true position of the tile centre


def test_cancel_and_bad_requests(tmp_path):
    class Token:
        cancelled = True

    with pytest.raises(CancelledError):
        synth_dataset(
            tmp_path / "a", n=2, tile=32, slides=1, slide_size=512, test_fraction=0, cancel=Token()
        )
    with pytest.raises(SynthError, match="at least two slides"):
        synth_dataset(tmp_path / "b", n=4, tile=32, slides=1, slide_size=512, test_fraction=0.5)
    with pytest.raises(SynthError, match="tissue"):
        synth_dataset(tmp_path / "c", n=500, tile=64, slides=1, slide_size=512, test_fraction=0)


def test_val_tiles_come_from_a_slide_of_their_own_and_leave_train_and_test_as_they_were(tmp_path):
    plain, with_val = tmp_path / "plain", tmp_path / "val"
    options = {"n": 4, "tile": 32, "slides": 2, "slide_size": 512, "test_fraction": 0.25}
    synth_dataset(plain, **options)
    info = json.loads(synth_dataset(with_val, val=2, **options).read_text())
    assert not (plain / "HE" / "val").exists()
    for split in ("train", "test"):
        assert _names(plain, "HE", split) == _names(with_val, "HE", split)
    assert len(_names(with_val, "HE", "val")) == len(_names(with_val, "truth", "val")) == 2
    slides = {s: {t["slide"] for t in info["tiles"] if t["split"] == s} for s in SPLITS}
    assert slides["val"] == {2} and not slides["val"] & (slides["train"] | slides["test"])
    assert len(info["slides"]) == 3
