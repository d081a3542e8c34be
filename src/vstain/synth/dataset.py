"""Paired tile datasets in the BCI layout, with the ground truth beside them.

``HE/{train,test}/NAME.png`` and ``IHC/{train,test}/NAME.png`` (same names, as in BCI), plus
``truth/{train,test}/NAME.npz`` and ``synth.json`` (the specs of the slides and where each tile
comes from); with ``val`` tiles, a ``val`` split too. Adjacent-section truth also holds
``ihc_aligned``, the H&E section itself stained for the marker (the pixel-aligned IHC to score
virtual stains against). Tiles are drawn from tissue only, from several slides with different
stain variation; train, validation and test tiles come from different slides, as in the seed
papers' splits by slide, so a model is selected on one slide and tested once on another.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np

from vstain.errors import CancelledError, OutputExistsError, SynthError
from vstain.synth.hashing import stream_key
from vstain.synth.layout import tissue_field
from vstain.synth.noise import PointSampler
from vstain.synth.render import TilePair, render_tile
from vstain.synth.spec import SlideSpec, make_spec
from vstain.synth.transform import SectionTransform

SPLITS = ("train", "val", "test")
_OUTPUTS = ("HE", "IHC", "truth", "synth.json")
#: Tissue is measured on this many points per tile side when picking tiles.
_PROBES = 8


def _slide_specs(
    seed: int, slides: int, marker: str, size: int, pixel_size: float, mode: str
) -> list[SlideSpec]:
    return [
        make_spec(
            stream_key(seed, "dataset-slide", k) % 2**31,
            marker,
            size,
            pixel_size=pixel_size,
            mode=mode,
        )
        for k in range(slides)
    ]


def tissue_tiles(spec: SlideSpec, tile: int, min_tissue: float) -> np.ndarray:
    """(x, y) of the tile-aligned tiles of a slide with at least ``min_tissue`` tissue, (n, 2)."""
    xs = np.arange(0, spec.width - tile + 1, tile)
    ys = np.arange(0, spec.height - tile + 1, tile)
    tx, ty = (a.ravel() for a in np.meshgrid(xs, ys))
    probe = (np.arange(_PROBES) + 0.5) * tile / _PROBES
    px = (tx[:, None, None] + probe[None, None, :]) * spec.pixel_size
    py = (ty[:, None, None] + probe[None, :, None]) * spec.pixel_size
    px, py = np.broadcast_arrays(px, py)
    fraction = (tissue_field(spec.layout, PointSampler(spec.seed, px, py)) > 0).mean(axis=(1, 2))
    keep = fraction >= min_tissue
    return np.stack([tx[keep], ty[keep]], axis=1)


def _ihc_origin(spec: SlideSpec, x: int, y: int, tile: int) -> tuple[int, int]:
    """Where the IHC tile of an H&E tile is cut: around the true position of the tile's centre,
    as patch pairs are cut from roughly registered slides."""
    if spec.mode == "same-section":
        return x, y
    qx, qy = SectionTransform.from_spec(spec).he_to_ihc(
        np.array(x + tile / 2), np.array(y + tile / 2)
    )
    return (
        int(np.clip(round(float(qx) - tile / 2), 0, spec.width - tile)),
        int(np.clip(round(float(qy) - tile / 2), 0, spec.height - tile)),
    )


def _allocate(n: int, slides: int, test_fraction: float) -> list[tuple[str, int, int]]:
    """(split, slide, count) for each slide: test slides get the test tiles."""
    n_test = round(n * test_fraction)
    test_slides = 0 if n_test == 0 else max(1, round(slides * test_fraction))
    if n_test and (test_slides >= slides and n_test < n):
        raise SynthError(
            f"A dataset with train and test tiles needs at least two slides (got {slides}); "
            "use more slides or test_fraction=0."
        )
    plan = []
    for split, first, count, n_tiles in (
        ("train", 0, slides - test_slides, n - n_test),
        ("test", slides - test_slides, test_slides, n_test),
    ):
        for k in range(count):
            plan.append((split, first + k, n_tiles // count + (k < n_tiles % count)))
    return plan


def _truth_arrays(pair: TilePair, marker: str) -> dict[str, np.ndarray]:
    cells = pair.cells
    arrays = {
        "nuclei": pair.he_truth.nuclei,
        "pixel_class": pair.he_truth.pixel_class,
        "positive": pair.he_truth.positive[marker],
        "dab": pair.he_truth.dab,
        "ihc_nuclei": pair.ihc_truth.nuclei,
        "ihc_positive": pair.ihc_truth.positive[marker],
        "ihc_dab": pair.ihc_truth.dab,
        "cell_id": cells.id,
        "cell_kind": cells.kind,
        "cell_x": cells.x - pair.x,
        "cell_y": cells.y - pair.y,
        "cell_ihc_x": cells.ihc_x - pair.ihc_x,
        "cell_ihc_y": cells.ihc_y - pair.ihc_y,
        "cell_in_he": cells.in_he,
        "cell_in_ihc": cells.in_ihc,
        "cell_positive": cells.positive[marker],
        "origin": np.array([pair.x, pair.y, pair.ihc_x, pair.ihc_y]),
    }
    if pair.transform is not None:
        arrays["affine"] = pair.transform.affine
    return arrays


def _prepare(root: Path, overwrite: bool, splits: set[str]) -> None:
    existing = [name for name in _OUTPUTS if (root / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{root} already holds a dataset ({', '.join(existing)}). Choose another folder or "
            "pass overwrite=True to replace it."
        )
    for name in existing:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for kind in ("HE", "IHC", "truth"):
        for split in splits:
            (root / kind / split).mkdir(parents=True, exist_ok=True)


def synth_dataset(
    out_dir: str | Path,
    n: int,
    tile: int = 256,
    marker: str = "ck818",
    seed: int = 0,
    *,
    test_fraction: float = 0.2,
    val: int = 0,
    slides: int = 4,
    slide_size: int = 8192,
    pixel_size: float = 0.5,
    mode: str = "same-section",
    min_tissue: float = 0.5,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
) -> Path:
    """Write ``n`` paired tiles in the BCI layout under ``out_dir``; returns ``synth.json``.

    Parameters
    ----------
    test_fraction
        Share of tiles in ``test``; they come from their own slides.
    val
        Tiles of a ``val`` split, in addition to the ``n``, from one more slide of their own (drawn
        after the others, so the train and test tiles are those of the same call without ``val``).
    slides
        Number of simulated slides (each with its own stain, scanner and tissue).
    min_tissue
        Least tissue fraction of a tile.
    progress
        Called with (done, total) after each tile.
    cancel
        Object with a ``cancelled`` attribute (e.g. a tile-engine CancelToken); checked per tile.
    """
    if n < 1 or tile < 16 or slides < 1 or val < 0 or not 0 <= test_fraction < 1:
        raise SynthError(
            f"Cannot make a dataset of n={n} tiles of {tile} px from {slides} slides with "
            f"test_fraction={test_fraction} and val={val}; use n >= 1, tile >= 16, slides >= 1, "
            "val >= 0 and a test fraction in [0, 1)."
        )
    root = Path(out_dir)
    specs = _slide_specs(seed, slides + (val > 0), marker, slide_size, pixel_size, mode)
    plan = _allocate(n, slides, test_fraction) + ([("val", slides, val)] if val else [])
    rng = np.random.default_rng(stream_key(seed, "dataset-tiles"))
    chosen = []
    for split, k, count in plan:
        candidates = tissue_tiles(specs[k], tile, min_tissue)
        if len(candidates) < count:
            raise SynthError(
                f"Slide {k} has only {len(candidates)} tiles of {tile} px with at least "
                f"{min_tissue:.0%} tissue but {count} were asked for; use more or larger slides "
                "(slides, slide_size), fewer tiles or a lower min_tissue."
            )
        for x, y in candidates[rng.choice(len(candidates), count, replace=False)]:
            chosen.append((split, k, int(x), int(y)))
    _prepare(root, overwrite, {split for split, _, _ in plan})
    records = []
    for i, (split, k, x, y) in enumerate(chosen):
        if cancel is not None and cancel.cancelled:
            raise CancelledError(f"Dataset in {root} cancelled after {i} of {n + val} tiles.")
        spec = specs[k]
        adjacent = mode == "adjacent-section"
        origin = _ihc_origin(spec, x, y, tile)
        pair = render_tile(spec, x, y, tile, tile, ihc_origin=origin, aligned_ihc=adjacent)
        name = f"{i:05d}_s{k}_x{x}_y{y}"
        (root / "HE" / split / f"{name}.png").write_bytes(imagecodecs.png_encode(pair.he))
        (root / "IHC" / split / f"{name}.png").write_bytes(imagecodecs.png_encode(pair.ihc))
        truth = _truth_arrays(pair, marker)
        if adjacent:
            truth["ihc_aligned"] = pair.ihc_aligned
        np.savez_compressed(root / "truth" / split / f"{name}.npz", **truth)
        records.append(
            {
                "name": name,
                "split": split,
                "slide": k,
                "x": x,
                "y": y,
                "ihc_x": pair.ihc_x,
                "ihc_y": pair.ihc_y,
            }
        )
        if progress is not None:
            progress(i + 1, n + val)
    manifest = root / "synth.json"
    manifest.write_text(
        json.dumps(
            {
                "format": "vstain-synth-dataset/1",
                "marker": marker,
                "mode": mode,
                "tile": tile,
                "pixel_size": pixel_size,
                "seed": seed,
                "slides": [s.to_dict() for s in specs],
                "tiles": records,
            },
            indent=1,
        )
    )
    return manifest
