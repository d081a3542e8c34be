"""Stain normalisation on simulated tissue: the same section stained with other stain vectors and
strengths, normalised to the original's statistics, looks more like the original than without
normalisation, and (macenko) stains virtually more like it."""

import dataclasses

import numpy as np
import pytest
import torch

from vstain.color import Normaliser, stain_statistics
from vstain.models import load_checkpoint
from vstain.models.device import predict_batch
from vstain.synth import make_spec, render_he
from vstain.weights import resolve_checkpoint

REGION = (256, 256, 384, 384)  # x, y, w, h


@pytest.fixture(scope="module")
def sections():
    """(original, restained): one tissue region, rendered with its slide's stains and with the
    H&E stain vectors and strengths the simulator drew for another slide (seed 10: hematoxylin
    0.92 and eosin 0.77 instead of 1.13 and 1.06, vectors turned by up to 4 degrees)."""
    spec = make_spec(2, size=1024)
    other = make_spec(10, size=1024).staining
    staining = dataclasses.replace(
        spec.staining,
        he_vectors=other.he_vectors,
        hematoxylin=other.hematoxylin,
        eosin=other.eosin,
    )
    restained = dataclasses.replace(spec, staining=staining)
    return render_he(spec, *REGION), render_he(restained, *REGION)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_checkpoint(resolve_checkpoint("pix2pix"), device="cpu")


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).mean())


def _normalised(restained, original, method):
    normaliser = Normaliser(
        method, stain_statistics(restained, method), stain_statistics(original, method)
    )
    return normaliser(restained)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normalised_restained_section_is_closer_to_the_original(sections, method):
    original, restained = sections
    normalised = _normalised(restained, original, method)
    pixels = _mad(restained, original), _mad(normalised, original)
    print(f"{method}: H&E |diff| {pixels[0]:.1f} -> {pixels[1]:.1f} levels")
    assert pixels[1] < 0.6 * pixels[0]


def test_macenko_normalised_section_stains_virtually_like_the_original(sections, model):
    """The shipped pix2pix's virtual IHC of the normalised section is closer to the original's.
    (Reinhard's does not get closer with these weights, 5.0 -> 5.5 levels: docs/color.md.)"""
    original, restained = sections
    normalised = _normalised(restained, original, "macenko")
    ihc = predict_batch(model, np.stack([original, restained, normalised]), torch.device("cpu"))
    virtual = ihc["ihc"] * 255
    stains = _mad(virtual[1], virtual[0]), _mad(virtual[2], virtual[0])
    print(f"macenko: virtual IHC |diff| {stains[0]:.1f} -> {stains[1]:.1f} levels")
    assert stains[1] < 0.8 * stains[0]
