"""Rendering: deterministic, tile-border consistent, with truth that matches the pixels."""

import dataclasses
import itertools

import imagecodecs
import numpy as np
import pytest

from vstain.errors import RegionError
from vstain.synth import MARKERS, PixelClass, make_spec, render_he, render_ihc, render_tile

from .conftest import tissue_origin

IMAGE_FIELDS = ("he", "ihc", "he_clean", "ihc_clean")
TRUTH_FIELDS = ("nuclei", "cells", "pixel_class", "dab")


def _quadrants(spec, x, y, size):
    half = size // 2
    return {
        (dy, dx): render_tile(spec, x + dx, y + dy, half, half)
        for dy in (0, half)
        for dx in (0, half)
    }


def _assert_assembles(whole, quads, size):
    half = size // 2
    for (dy, dx), q in quads.items():
        box = (slice(dy, dy + half), slice(dx, dx + half))
        for name in IMAGE_FIELDS:
            np.testing.assert_array_equal(getattr(q, name), getattr(whole, name)[box], name)
        for truth in ("he_truth", "ihc_truth"):
            for name in TRUTH_FIELDS:
                np.testing.assert_array_equal(
                    getattr(getattr(q, truth), name),
                    getattr(getattr(whole, truth), name)[box],
                    name,
                )
            for m in MARKERS:
                np.testing.assert_array_equal(
                    getattr(q, truth).positive[m], getattr(whole, truth).positive[m][box], m
                )


def test_region_equals_its_quadrants_before_jpeg(spec):
    clean = spec.with_scans(jpeg_quality=None)
    x, y = tissue_origin(spec, 512)
    x, y = x - 37, y + 21  # off the JPEG grid on purpose
    whole = render_tile(clean, x, y, 512, 512)
    _assert_assembles(whole, _quadrants(clean, x, y, 512), 512)


def test_region_equals_its_quadrants_with_jpeg(spec):
    # JPEG is applied on the global 8 px block grid, so any region agrees with its parts.
    x, y = tissue_origin(spec, 512)
    x, y = x + 100, y + 3
    whole = render_tile(spec, x, y, 512, 512)
    _assert_assembles(whole, _quadrants(spec, x, y, 512), 512)


def test_jpeg_depends_only_on_the_8px_block_grid(spec):
    """Why JPEG runs on the global 8 px grid: compressing tiles per request changes pixels unless
    the tiles line up with JPEG's 8 px blocks (numbers printed for the docs)."""
    clean = spec.with_scans(jpeg_quality=None)
    x, y = tissue_origin(spec, 512)
    raw = render_he(clean, x, y, 512, 512)
    q = spec.he_scan.jpeg_quality

    def jpeg(a):
        data = imagecodecs.jpeg8_encode(np.ascontiguousarray(a), level=q, subsampling="444")
        return imagecodecs.jpeg8_decode(data).astype(int)

    def tiled(cuts):
        out = np.zeros(raw.shape, int)
        for r0, r1 in itertools.pairwise(cuts):
            for c0, c1 in itertools.pairwise(cuts):
                out[r0:r1, c0:c1] = jpeg(raw[r0:r1, c0:c1])
        return out

    whole = jpeg(raw)
    error = np.abs(whole - raw).mean()
    np.testing.assert_array_equal(tiled([0, 96, 352, 512]), whole)  # on the block grid: identical
    diff = np.abs(tiled([0, 100, 356, 512]) - whole)  # tiles off the block grid
    print(
        f"\nJPEG q={q}: mean |error| {error:.2f}; tiles off the 8 px grid change "
        f"{np.mean(diff > 0):.0%} of values by {diff.mean():.2f} on average (max {diff.max()})"
    )
    assert 0 < diff.mean() < 2 * error


def test_deterministic_and_seeded(spec):
    x, y = tissue_origin(spec, 256)
    a, b = render_tile(spec, x, y, 256, 256), render_tile(spec, x, y, 256, 256)
    for name in IMAGE_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    other = make_spec(spec.seed + 1, spec.marker, (spec.height, spec.width))
    c = render_tile(other, x, y, 256, 256)
    assert np.mean(np.abs(a.he.astype(int) - c.he)) > 10


def test_shapes_and_dtypes(spec):
    x, y = tissue_origin(spec, 256)
    t = render_tile(spec, x + 5, y + 9, 200, 120)
    for name in IMAGE_FIELDS:
        assert getattr(t, name).shape == (120, 200, 3) and getattr(t, name).dtype == np.uint8
    for truth in (t.he_truth, t.ihc_truth):
        assert truth.nuclei.dtype == np.int32 and truth.cells.dtype == np.int32
        assert truth.pixel_class.dtype == np.uint8 and truth.dab.dtype == np.float32
        assert set(truth.positive) == set(MARKERS)
        assert all(m.dtype == bool and m.shape == (120, 200) for m in truth.positive.values())
    assert t.transform is None and (t.ihc_x, t.ihc_y) == (t.x, t.y)
    assert render_ihc(spec, x + 5, y + 9, 200, 120).shape == (120, 200, 3)


def test_he_does_not_depend_on_marker(spec):
    x, y = tissue_origin(spec, 256)
    he = {m: render_he(dataclasses.replace(spec, marker=m), x, y, 128, 128) for m in MARKERS}
    np.testing.assert_array_equal(he["ck818"], he["cd3"])
    np.testing.assert_array_equal(he["ck818"], he["ki67"])


def test_truth_matches_pixels(spec):
    x, y = tissue_origin(spec, 512)
    t = render_tile(spec, x, y, 512, 512)
    truth = t.he_truth
    he = t.he_clean.astype(float).mean(axis=-1)
    nuclei, glass = truth.nuclei > 0, truth.pixel_class == PixelClass.GLASS
    assert nuclei.mean() > 0.05
    assert he[nuclei].mean() < he[~nuclei & ~glass].mean() - 40  # nuclei are dark
    # Cell labels hold nuclei: every nucleus pixel of a fibroblast or lymphocyte is its own cell.
    assert np.all(truth.cells[nuclei & (truth.cells > 0)] > 0)
    np.testing.assert_array_equal(
        truth.positive["ck818"], truth.pixel_class == PixelClass.EPITHELIUM
    )
    assert np.all(truth.pixel_class[truth.positive["cd3"]] == PixelClass.LYMPHOCYTE)
    assert np.all(nuclei[truth.positive["ki67"]])
    # DAB is where the marker is: the marker-positive pixels hold most of it.
    dab = truth.dab - spec.staining.dab_background * ~glass
    assert dab[truth.positive["ck818"]].sum() > 0.95 * dab.sum()
    # Cells listed for the tile are the labelled nuclei whose centre lies in it.
    listed = set(t.cells.id[t.cells.in_he].tolist())
    labelled = set(np.unique(truth.nuclei[16:-16, 16:-16]).tolist()) - {0}
    assert labelled <= listed


def test_glass_is_bright_and_tissue_is_not(spec):
    # A region at the slide corner is mostly glass.
    t = render_tile(spec, 0, 0, 128, 128)
    glass = t.he_truth.pixel_class == PixelClass.GLASS
    assert glass.mean() > 0.5
    assert t.he[glass].mean() > 200 and t.ihc[glass].mean() > 200


def test_region_outside_slide_is_refused(spec):
    with pytest.raises(RegionError, match="outside the simulated slide"):
        render_tile(spec, spec.width - 10, 0, 64, 64)
