"""Fields of global position: the same numbers on a grid, at points and in any sub-region."""

import numpy as np
import pytest

from vstain.synth.hashing import rgb_noise, stream_key, uniform
from vstain.synth.layout import tissue_field
from vstain.synth.noise import GridSampler, PointSampler


def _grid(x0, y0, w, h, step=0.5):
    return (x0 + np.arange(w)) * step, (y0 + np.arange(h)) * step


@pytest.mark.parametrize(("spacing", "octaves"), [(0.9, 1), (20.0, 3), (300.0, 2)])
def test_grid_and_points_agree_exactly(spacing, octaves):
    xs, ys = _grid(-37, 1200, 300, 200)
    grid = GridSampler(5, xs, ys).noise("f", spacing, octaves)
    X, Y = np.meshgrid(xs[::7], ys[::11])
    np.testing.assert_array_equal(
        PointSampler(5, X, Y).noise("f", spacing, octaves), grid[::11, ::7]
    )
    # A few scattered points take the per-point path: still the same numbers.
    np.testing.assert_array_equal(
        PointSampler(5, X[0, :3], Y[0, :3]).noise("f", spacing, octaves), grid[0, :21:7]
    )


def test_sub_grid_equals_part_of_larger_grid():
    big = GridSampler(3, *_grid(1000, 2000, 400, 300)).noise("g", 12.0, 3)
    part = GridSampler(3, *_grid(1000 + 123, 2000 + 45, 100, 80)).noise("g", 12.0, 3)
    np.testing.assert_array_equal(part, big[45:125, 123:223])


def test_noise_has_about_unit_variance_and_depends_on_seed_and_name():
    xs, ys = _grid(0, 0, 1000, 1000, step=2.0)
    a = GridSampler(1, xs, ys).noise("a", 4.0)
    assert abs(float(a.mean())) < 0.05 and 0.9 < float(a.std()) < 1.1
    assert not np.array_equal(a, GridSampler(2, xs, ys).noise("a", 4.0))
    assert not np.array_equal(a, GridSampler(1, xs, ys).noise("b", 4.0))
    assert abs(np.corrcoef(a.ravel(), GridSampler(1, xs, ys).noise("b", 4.0).ravel())[0, 1]) < 0.05


def test_tissue_field_grid_and_points_agree(spec):
    xs, ys = _grid(300, 500, 256, 256)
    grid = tissue_field(spec.layout, GridSampler(spec.seed, xs, ys))
    X, Y = np.meshgrid(xs[::5], ys[::3])
    np.testing.assert_array_equal(
        tissue_field(spec.layout, PointSampler(spec.seed, X, Y)), grid[::3, ::5]
    )


def test_uniform_is_uniform_and_keyed():
    u = uniform(stream_key(0, "x"), np.arange(100000), 7)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.002
    assert not np.array_equal(u, uniform(stream_key(1, "x"), np.arange(100000), 7))


def test_rgb_noise_is_zero_mean_unit_variance_per_channel():
    n = rgb_noise(stream_key(0, "n"), np.arange(512)[None, :], np.arange(512)[:, None])
    assert n.shape == (512, 512, 3) and n.dtype == np.float32
    np.testing.assert_allclose(n.mean(axis=(0, 1)), 0, atol=0.01)
    np.testing.assert_allclose(n.std(axis=(0, 1)), 1, atol=0.01)
    assert abs(np.corrcoef(n[..., 0].ravel(), n[..., 1].ravel())[0, 1]) < 0.01
