"""Colour deconvolution with the slide's true stain matrix recovers the rendered DAB."""

import dataclasses

import numpy as np
import pytest

from vstain.color.optics import rgb_to_concentrations
from vstain.synth import MARKERS, PixelClass, render_tile

from .conftest import tissue_origin


@pytest.mark.parametrize("marker", MARKERS)
def test_true_matrix_recovers_dab_of_clean_ihc(spec, marker):
    s = dataclasses.replace(spec, marker=marker)
    x, y = tissue_origin(s, 256)
    t = render_tile(s, x, y, 256, 256)
    tissue = t.ihc_truth.pixel_class != PixelClass.GLASS
    dab = rgb_to_concentrations(t.ihc_clean, s.staining.ihc_stains)[..., 2]
    r = np.corrcoef(dab[tissue], t.ihc_truth.dab[tissue])[0, 1]
    error = np.abs(dab - t.ihc_truth.dab)[tissue]
    print(f"\n{marker}: Pearson r {r:.4f}, median |error| {np.median(error):.4f} OD")
    assert r > 0.95
    assert np.median(error) < 0.01


def test_scanned_ihc_still_correlates_and_wrong_matrix_does_worse(spec):
    x, y = tissue_origin(spec, 256)
    t = render_tile(spec, x, y, 256, 256)
    tissue = t.ihc_truth.pixel_class != PixelClass.GLASS
    truth = t.ihc_truth.dab[tissue]
    scanned = rgb_to_concentrations(t.ihc, spec.staining.ihc_stains)[..., 2][tissue]
    assert np.corrcoef(scanned, truth)[0, 1] > 0.8  # blur, noise and JPEG cost some
    # The H&E matrix has the default DAB vector but the IHC's hematoxylin is perturbed.
    clean = rgb_to_concentrations(t.ihc_clean, spec.staining.ihc_stains)[..., 2][tissue]
    other = rgb_to_concentrations(t.ihc_clean, spec.staining.he_stains)[..., 2][tissue]
    assert np.abs(other - truth).mean() > np.abs(clean - truth).mean()
