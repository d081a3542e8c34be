"""Loaded models: the shared cache and the tile function's refusal of non-finite outputs."""

import gc
import weakref

import numpy as np
import pytest
import torch

from tests.napari.conftest import tiny_checkpoint
from vstain.errors import CheckpointError, StainError
from vstain.models import create
from vstain.pipeline import ModelCache, load_model


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


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_outputs_are_refused_when_the_batch_is_collected(bad):
    model = create("pix2pix", "small")
    fn = load_model(model, "cpu").tile_function()
    windows = np.full((2, 32, 32, 3), 200, np.uint8)
    assert fn(windows)["ihc"].dtype == np.uint8
    with torch.no_grad():
        next(model.parameters()).fill_(bad)
    with pytest.raises(StainError, match="NaN or infinite"):
        fn(windows)
