"""Loaded models: the shared cache and the tile function's refusal of non-finite outputs."""

import gc
import weakref

import numpy as np
import pytest

from tests.napari.conftest import tiny_checkpoint
from vstain.errors import CheckpointError, StainError
from vstain.pipeline import ModelCache
from vstain.pipeline.loaded_model import check_finite


@pytest.fixture
def checkpoint(tmp_path):
    return tiny_checkpoint(tmp_path / "tiny.safetensors")


def test_cache_loads_once_and_frees_the_previous_model(tmp_path, checkpoint):
    other = tiny_checkpoint(tmp_path / "other.safetensors", seed=1)
    cache = ModelCache()
    first = cache.get(checkpoint, "cpu").model
    sha = cache.get(checkpoint, "cpu").sha256
    assert cache.get(checkpoint, "cpu").model is first
    assert len(sha) == 64
    gone = weakref.ref(first)
    del first
    loaded = cache.get(other, "cpu")
    second, other_sha = loaded.model, loaded.sha256
    del loaded
    gc.collect()
    assert gone() is None, "switching models frees the old one"
    assert other_sha != sha
    cache.clear()
    gone = weakref.ref(second)
    del second
    gc.collect()
    assert gone() is None
    with pytest.raises(CheckpointError, match="does not exist"):
        cache.get(tmp_path / "missing.safetensors", "cpu")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_are_refused(bad):
    ihc = np.zeros((2, 3, 4, 4), np.float32)
    check_finite({"ihc": ihc, "keypoints": np.zeros((2, 1, 4, 4), np.int32)}, "pix2pix")
    ihc[1, 0, 2, 2] = bad
    with pytest.raises(StainError, match="NaN or infinite ihc"):
        check_finite({"ihc": ihc}, "pix2pix")
