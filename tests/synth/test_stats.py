"""Statistics of simulated slides in the ranges of real ones (printed for the docs)."""

import dataclasses

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2hsv

from vstain.color.optics import rgb_to_concentrations, rgb_to_od
from vstain.synth import PixelClass, make_spec, render_tile
from vstain.synth.layout import tissue_field
from vstain.synth.noise import GridSampler

from .conftest import tissue_origin

#: QuPath's weakest positivity threshold (DAB OD).
DAB_1PLUS = 0.2


def test_tissue_covers_40_to_70_percent_of_slides():
    fractions = []
    for seed in range(6):
        spec = make_spec(seed, "ck818", 20000)
        w, h = spec.size_um
        grid = GridSampler(seed, np.linspace(0, w, 400), np.linspace(0, h, 400))
        fractions.append(float((tissue_field(spec.layout, grid) > 0).mean()))
    print("\ntissue fraction of 20000 px slides:", np.round(fractions, 3))
    assert all(0.4 <= f <= 0.7 for f in fractions)


def test_rendered_slide_has_tissue_pieces_on_glass():
    spec = make_spec(11, "ck818", 1024, pixel_size=1.0)
    t = render_tile(spec, 0, 0, 1024, 1024)
    tissue = t.he_truth.pixel_class != PixelClass.GLASS
    pieces = ndi.label(ndi.binary_opening(tissue, iterations=3))[0]
    sizes = np.bincount(pieces.ravel())[1:]
    # Glass is near-neutral: a saturation threshold (as tissue detectors use) finds the tissue.
    detected = rgb2hsv(t.he)[..., 1] > 0.08
    agreement = (detected == tissue).mean()
    print(
        f"\nrendered slide: tissue {tissue.mean():.2f}, {np.sum(sizes > 2000)} pieces, "
        f"saturation > 0.08 agrees with the truth on {agreement:.1%} of pixels"
    )
    assert 0.4 <= tissue.mean() <= 0.7
    assert 1 <= np.sum(sizes > 2000) <= 6
    assert agreement > 0.97


def test_he_optical_density_of_tissue(spec):
    """OD magnitude (norm of the RGB OD vector, as in Macenko's stain estimation) of tissue."""
    x, y = tissue_origin(spec, 512)
    t = render_tile(spec, x, y, 512, 512)
    tissue = t.he_truth.pixel_class != PixelClass.GLASS
    od = rgb_to_od(t.he)
    norm = np.linalg.norm(od, axis=-1)
    glass = np.linalg.norm(rgb_to_od(render_tile(spec, 0, 0, 64, 64).he), axis=-1)
    print(
        f"\nH&E OD norm: tissue {norm[tissue].mean():.2f} (per-channel mean "
        f"{od[tissue].mean():.2f}), nuclei {norm[t.he_truth.nuclei > 0].mean():.2f}, "
        f"glass {glass.mean():.3f}"
    )
    assert 0.3 <= norm[tissue].mean() <= 0.8
    assert norm[t.he_truth.nuclei > 0].mean() > 1.5 * norm[tissue].mean()
    assert glass.mean() < 0.1


def _positive_fractions(spec, marker, x, y):
    s = dataclasses.replace(spec, marker=marker)
    t = render_tile(s, x, y, 512, 512)
    tissue = t.ihc_truth.pixel_class != PixelClass.GLASS
    dab = rgb_to_concentrations(t.ihc, s.staining.ihc_stains)[..., 2]
    positive = dab > DAB_1PLUS
    nuclei = t.ihc_truth.nuclei
    ids = np.unique(nuclei[nuclei > 0])
    mean_dab = ndi.mean(dab, nuclei, ids)
    truly = ndi.maximum(t.ihc_truth.positive["ki67"], nuclei, ids)
    return {
        "tissue positive": positive[tissue].mean(),
        "truth positive": t.ihc_truth.positive[marker][tissue].mean(),
        "epithelium": (t.ihc_truth.pixel_class == PixelClass.EPITHELIUM)[tissue].mean(),
        "nuclei positive": np.mean(mean_dab > DAB_1PLUS),
        "nuclei truly positive": np.mean(truly),
    }


def test_dab_positive_fractions_per_marker(spec):
    x, y = tissue_origin(spec, 512, 0.9)
    stats = {m: _positive_fractions(spec, m, x, y) for m in ("ck818", "cd3", "ki67")}
    for m, s in stats.items():
        print(f"\n{m}: " + ", ".join(f"{k} {v:.3f}" for k, v in s.items()), end="")
    ck, cd3, ki67 = stats["ck818"], stats["cd3"], stats["ki67"]
    # Epithelium minus its (unstained) goblet mucin and blurred edges carries the DAB.
    assert 0.5 * ck["epithelium"] < ck["tissue positive"] < 1.1 * ck["epithelium"]
    assert ck["epithelium"] > 0.15
    assert 0.005 < cd3["tissue positive"] < 0.1
    assert 0.05 <= ki67["nuclei positive"] <= 0.4
    assert abs(ki67["nuclei positive"] - ki67["nuclei truly positive"]) < 0.05
