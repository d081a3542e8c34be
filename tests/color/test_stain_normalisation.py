"""Stain statistics and the Normaliser: known stains recovered, identity on own statistics,
pointwise (tiled == untiled), and a re-stained image brought back to the original's colours."""

import dask.array as da
import numpy as np
import pytest

from tests.color.conftest import angle_deg, perturbed_stains
from vstain.color import (
    Normaliser,
    StainError,
    concentrations_to_rgb,
    rgb_to_concentrations,
    rgb_to_od,
    slide_stain_statistics,
    stain_reference,
    stain_statistics,
)
from vstain.color.lab import lab_to_rgb, rgb_to_lab
from vstain.color.stain_normalisation import statistics_problems
from vstain.io.slide import Slide
from vstain.synth import make_spec, render_he

METHODS = ("macenko", "reinhard")


def he_concentrations(seed: int, size: int = 160) -> np.ndarray:
    """Random H / E mixtures, a quarter glass (as `two_stain_image`), (size, size, 3)."""
    rng = np.random.default_rng(seed)
    n = size * size
    a = rng.uniform(0.1, 1.5, n) * (rng.uniform(size=n) > 0.25)
    w = rng.uniform(size=n)
    return np.stack([a * w, a * (1 - w), np.zeros(n)], axis=1).reshape(size, size, 3)


@pytest.fixture(scope="module")
def he_tile():
    """A simulated H&E tile (scanner noise, blur, JPEG) at 0.5 um/px."""
    return render_he(make_spec(2, size=1024), 256, 256, 384, 384)


def test_lab_conversion_matches_scikit_image():
    skimage_color = pytest.importorskip("skimage.color")
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    lab = rgb_to_lab(rgb)
    np.testing.assert_allclose(lab, skimage_color.rgb2lab(rgb), atol=1e-3)
    np.testing.assert_array_equal(lab_to_rgb(lab), rgb)


@pytest.mark.parametrize("seed", [3, 8])
def test_macenko_statistics_recover_stains_and_concentrations(seed):
    truth = perturbed_stains(seed, ("hematoxylin", "eosin", "dab"))
    rgb = concentrations_to_rgb(he_concentrations(seed), truth)
    stats = stain_statistics(rgb, "macenko")
    assert angle_deg(np.array(stats["stain_vectors"][0]), truth.vectors[0]) < 3.0
    assert angle_deg(np.array(stats["stain_vectors"][1]), truth.vectors[1]) < 3.0
    od_norm = np.linalg.norm(rgb_to_concentrations(rgb, truth) @ truth.vectors, axis=-1)
    true_top = np.percentile(rgb_to_concentrations(rgb, truth)[od_norm >= 0.15][:, :2], 99, 0)
    np.testing.assert_allclose(stats["max_concentrations"], true_top, rtol=0.05)
    assert statistics_problems(stats, "macenko") == []


@pytest.mark.parametrize("method", METHODS)
def test_normalising_to_own_statistics_changes_nothing(he_tile, method):
    stats = stain_statistics(he_tile, method)
    out = Normaliser(method, stats, stats)(he_tile)
    expected = he_tile.copy()
    if method == "macenko":
        expected[expected == 0] = 1  # optical density clamps intensity 0 to 1 (docs/color.md)
    np.testing.assert_array_equal(out, expected)


def restained_pair() -> tuple[np.ndarray, np.ndarray]:
    """The same H / E amounts rendered with two sets of stain vectors and strengths."""
    conc = he_concentrations(5)
    original = concentrations_to_rgb(conc, perturbed_stains(5, ("hematoxylin", "eosin", "dab")))
    other = perturbed_stains(50, ("hematoxylin", "eosin", "dab"))
    return original, concentrations_to_rgb(conc * [1.3, 0.7, 0.0], other)


def test_macenko_brings_a_restained_image_back_to_the_original():
    original, restained = restained_pair()
    stats = [stain_statistics(image, "macenko") for image in (restained, original)]
    before = np.abs(restained.astype(int) - original).mean()
    after = np.abs(Normaliser("macenko", *stats)(restained).astype(int) - original).mean()
    print(f"macenko: mean |difference| {before:.1f} -> {after:.2f} levels")
    assert after < 0.1 * before


def test_reinhard_gives_the_reference_lab_statistics():
    original, restained = restained_pair()
    stats = [stain_statistics(image, "reinhard") for image in (restained, original)]
    tissue = np.linalg.norm(rgb_to_od(restained), axis=-1) >= 0.15
    out = rgb_to_lab(Normaliser("reinhard", *stats)(restained)[tissue])  # the same pixels
    np.testing.assert_allclose(out.mean(0), stats[1]["mean"], atol=0.5)
    np.testing.assert_allclose(out.std(0), stats[1]["std"], rtol=0.03)
    assert np.abs(np.subtract(stats[0]["mean"], stats[1]["mean"])).max() > 5.0


@pytest.mark.parametrize("method", METHODS)
def test_normaliser_is_pointwise_on_batches(he_tile, method):
    stats = stain_statistics(he_tile, method)
    reference = {"macenko": stats, "reinhard": stats}[method] | (
        {"max_concentrations": [1.0, 0.8]} if method == "macenko" else {"mean": [60, 20, -10]}
    )
    normaliser = Normaliser(method, stats, reference)
    batch = np.stack([he_tile[:128, :128], he_tile[128:256, :128], he_tile[:128, 128:256]])
    out = normaliser(batch)
    assert out.shape == batch.shape and out.dtype == np.uint8
    whole = normaliser(he_tile)
    np.testing.assert_array_equal(out[1], whole[128:256, :128])
    np.testing.assert_array_equal(normaliser(he_tile[5:77, 9:200]), whole[5:77, 9:200])
    assert np.abs(whole.astype(int) - he_tile).mean() > 2  # it did change the colours


def test_none_passes_pixels_through_and_errors_say_what_to_do(he_tile):
    assert Normaliser("none")(he_tile) is he_tile
    assert Normaliser("none").settings() == {"method": "none"}
    stats = stain_statistics(he_tile, "macenko")
    with pytest.raises(StainError, match="Unknown stain normalisation method 'vahadane'"):
        Normaliser("vahadane", stats, stats)
    with pytest.raises(StainError, match="reference statistics are invalid"):
        Normaliser("macenko", stats, {**stats, "max_concentrations": [1.0, -1.0]})
    with pytest.raises(StainError, match="slide statistics are invalid"):
        Normaliser("reinhard", stats, stats)  # macenko statistics for reinhard
    with pytest.raises(StainError, match="uint8"):
        Normaliser("macenko", stats, stats)(he_tile / 255.0)
    with pytest.raises(StainError, match="too few"):
        stain_statistics(np.full((64, 64, 3), 245, np.uint8), "reinhard")


def test_slide_statistics_come_from_tissue_windows_of_the_given_level(he_tile):
    big = np.tile(he_tile, (3, 3, 1))  # 1152 px, chunked like a slide
    coarse = big[::8, ::8]
    slide = Slide(path=None, levels=[da.from_array(big, chunks=(128, 128, 3)), da.asarray(coarse)])
    whole = stain_statistics(big, "macenko")
    stats = slide_stain_statistics(slide, "macenko", n_chunks=12)
    assert stats["level"] == 0
    assert stats == slide_stain_statistics(slide, "macenko", n_chunks=12)
    for got, want in zip(stats["stain_vectors"], whole["stain_vectors"], strict=True):
        assert angle_deg(np.array(got), np.array(want)) < 3.0
    np.testing.assert_allclose(stats["max_concentrations"], whole["max_concentrations"], rtol=0.1)
    # A mask of the whole slide at another resolution picks where the windows go.
    pen = big.copy()
    pen[:, 576:] = (30, 160, 40)  # green ink on the right half
    inked = Slide(path=None, levels=[da.from_array(pen, chunks=(128, 128, 3))])
    left = np.zeros((36, 36), bool)
    left[:, :14] = True
    masked = slide_stain_statistics(inked, "reinhard", mask=left, n_chunks=12)
    unmasked = slide_stain_statistics(inked, "reinhard", n_chunks=12)
    clean = stain_statistics(big[:, :448], "reinhard")
    assert abs(masked["mean"][1] - clean["mean"][1]) < 3.0
    assert abs(unmasked["mean"][1] - clean["mean"][1]) > 10.0
    with pytest.raises(StainError, match="No tissue found"):
        slide_stain_statistics(inked, "reinhard", mask=np.zeros((8, 8), bool))


def test_stain_reference_pools_training_tiles(he_tile):
    tiles = [he_tile[:192, :192], he_tile[192:, 192:], he_tile[:192, 192:]]
    reference = stain_reference(tiles, pixels_per_image=None)
    assert set(reference) == set(METHODS)
    pooled = np.concatenate([t.reshape(-1, 3) for t in tiles])
    assert reference["reinhard"] == stain_statistics(pooled, "reinhard", max_pixels=None)
    assert all(statistics_problems(reference[m], m) == [] for m in METHODS)
    with pytest.raises(StainError, match="No images"):
        stain_reference([])
