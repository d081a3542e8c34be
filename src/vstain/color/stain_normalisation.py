"""Stain normalisation of H&E input: statistics of a slide's tissue, and the `Normaliser` that
maps a slide's colours onto a reference (the statistics of a model's training data).

Statistics are small JSON-able dicts, estimated once per slide (`slide_stain_statistics`) or once
per training set (`stain_reference`), never per tile: per-tile statistics would give every tile
its own colours and make seams. The `Normaliser` is a fixed function of each pixel alone, so a
tiled slide is normalised exactly like the whole one.

- ``macenko`` (Macenko et al. 2009): stain vectors of the tissue (`stains_from_od`) and the 99th
  percentile of each stain's concentration. Normalising unmixes with the slide's vectors, scales
  each stain's concentration by ``reference / slide`` 99th percentiles and remixes with the
  reference vectors; the residual (what the two stains do not explain) is carried over
  unscaled, so a slide normalised to its own statistics is unchanged.
- ``reinhard`` (Reinhard et al. 2001, in CIELAB as most pathology tools do): mean and standard
  deviation of L*, a*, b* over the tissue; normalising standardises each channel with the slide's
  values and rescales it with the reference's. Applied to glass, this would tint it (the tissue's
  statistics say nothing about glass), so each pixel is blended from its own colour (optical
  density up to `GLASS_OD`) to the normalised one (from `BETA` on), linearly in between.
- ``none``: pixels pass through unchanged.

Tissue pixels are those whose optical density vector is at least ``BETA`` long (glass is
shorter), inside an optional mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import dask
import numpy as np

from vstain.color.lab import lab_to_rgb, mix_channels, rgb_to_lab
from vstain.color.optics import StainMatrix, od_to_rgb, rgb_to_od
from vstain.color.pixels import check_rgb, sample_pixels
from vstain.color.stain_estimation import stains_from_od
from vstain.errors import StainError

if TYPE_CHECKING:
    from vstain.io.slide import Slide

METHODS = ("none", "macenko", "reinhard")
#: Pixels whose OD vector is shorter than this are glass (as in `estimate_stains`).
BETA = 0.15
#: Pixels whose OD vector is at most this long are left as they are by ``reinhard``.
GLASS_OD = 0.05
#: Percentile of each stain's concentration that normalisation matches (Macenko's choice).
CONCENTRATION_PERCENTILE = 99.0
#: Fewer tissue pixels than this give no usable statistics.
MIN_TISSUE_PIXELS = 1000


def tissue_pixels(pixels: np.ndarray) -> np.ndarray:
    """The RGB pixels (N, 3) whose optical density vector is at least `BETA` long."""
    return pixels[np.linalg.norm(rgb_to_od(pixels), axis=-1) >= BETA]


def macenko_statistics(pixels: np.ndarray) -> dict:
    """Macenko statistics of tissue pixels (N, 3) uint8: ``stain_vectors`` (hematoxylin, eosin;
    unit OD rows) and ``max_concentrations`` (their 99th-percentile concentrations, OD units)."""
    od = rgb_to_od(pixels).astype(np.float64)
    stains = stains_from_od(od, "he", BETA)
    concentrations = od @ stains.inverse
    top = np.percentile(concentrations[:, :2], CONCENTRATION_PERCENTILE, axis=0)
    return {
        "method": "macenko",
        "stain_vectors": stains.vectors[:2].round(6).tolist(),
        "max_concentrations": top.round(6).tolist(),
        "n_pixels": len(pixels),
    }


def reinhard_statistics(pixels: np.ndarray) -> dict:
    """Reinhard statistics of tissue pixels (N, 3) uint8: per-channel ``mean`` and ``std`` of
    CIELAB (L*, a*, b*)."""
    lab = rgb_to_lab(pixels).astype(np.float64)
    return {
        "method": "reinhard",
        "mean": lab.mean(axis=0).round(6).tolist(),
        "std": lab.std(axis=0).round(6).tolist(),
        "n_pixels": len(pixels),
    }


ESTIMATORS = {"macenko": macenko_statistics, "reinhard": reinhard_statistics}
#: The numbers each method's statistics hold, and their shapes.
STATISTICS_SHAPES = {
    "macenko": {"stain_vectors": (2, 3), "max_concentrations": (2,)},
    "reinhard": {"mean": (3,), "std": (3,)},
}
#: Stain vectors closer than this sine (about 1 degree) cannot unmix a slide.
MIN_STAIN_SINE = 0.017


def stain_statistics(
    image: np.ndarray,
    method: str,
    *,
    mask: np.ndarray | None = None,
    max_pixels: int = 200_000,
    seed: int = 0,
) -> dict:
    """Statistics of ``method`` (``macenko`` or ``reinhard``) of the tissue in an RGB uint8
    image (H, W, 3) or pixel list (N, 3), inside ``mask`` (default all); at most
    ``max_pixels`` pixels, drawn with ``seed``. Raises StainError without enough tissue."""
    _check_method(method, ESTIMATORS)
    pixels = tissue_pixels(sample_pixels(image, mask, max_pixels=max_pixels, seed=seed))
    if len(pixels) < MIN_TISSUE_PIXELS:
        raise StainError(
            f"Only {len(pixels)} tissue pixels (optical density >= {BETA}), too few for stain "
            f"statistics (need {MIN_TISSUE_PIXELS}). Give an image or mask that contains tissue."
        )
    return ESTIMATORS[method](pixels)


def slide_stain_statistics(
    slide: Slide,
    method: str,
    *,
    level: int = 0,
    mask: np.ndarray | None = None,
    n_chunks: int = 32,
    seed: int = 0,
) -> dict:
    """Statistics of ``method`` of a slide's tissue, once per slide.

    Up to ``n_chunks`` chunks of ``level`` (the level the model's tiles are read from, so the
    statistics see the resolution the `Normaliser` will), each under a tissue pixel of ``mask``
    drawn with ``seed``, are read in one dask computation (in parallel) and pooled; whole
    chunks, because reading part of a chunk decodes all of it anyway. ``mask`` is a boolean
    tissue mask of the whole slide at any resolution (e.g.
    ``vstain.tiles.job.slide_tissue_mask(slide)``); by default, the pixels of the coarsest
    level whose optical density is at least `BETA`. The result also records ``level``.
    """
    _check_method(method, ESTIMATORS)
    if mask is None:
        mask = np.linalg.norm(rgb_to_od(np.asarray(slide.levels[-1])), axis=-1) >= BETA
    rows, cols = np.nonzero(np.asarray(mask, bool))
    if len(rows) == 0:
        raise StainError(
            f"No tissue found on {slide.path}: the mask is empty. Give a tissue mask, or check "
            "that the slide is a brightfield H&E."
        )
    array = slide.levels[level]
    pick = np.random.default_rng(seed).choice(len(rows), min(len(rows), 8 * n_chunks), False)
    blocks = []
    for axis, where in ((0, rows[pick]), (1, cols[pick])):
        bounds = np.cumsum((0, *array.chunks[axis]))
        centre = (where + 0.5) * array.shape[axis] / mask.shape[axis]
        blocks.append(np.searchsorted(bounds, centre, side="right") - 1)
    chosen = list(dict.fromkeys(zip(*blocks, strict=True)))[:n_chunks]
    chunks = dask.compute(*(array.blocks[int(i), int(j)] for i, j in chosen))
    pixels = np.concatenate([np.asarray(c).reshape(-1, 3) for c in chunks])
    return {**stain_statistics(pixels, method, seed=seed), "level": level}


def stain_reference(
    images: Iterable[np.ndarray],
    methods: tuple[str, ...] = ("macenko", "reinhard"),
    *,
    pixels_per_image: int = 20_000,
    seed: int = 0,
) -> dict[str, dict]:
    """Reference statistics of a training set, keyed by method (a model card's
    ``stain_reference``): up to ``pixels_per_image`` pixels of each RGB uint8 H&E image
    (H, W, 3), drawn with ``seed`` and the image's index, pooled."""
    for method in methods:
        _check_method(method, ESTIMATORS)
    pooled = [
        sample_pixels(image, max_pixels=pixels_per_image, seed=seed + i)
        for i, image in enumerate(images)
    ]
    if not pooled:
        raise StainError("No images given for the stain reference: give the training H&E tiles.")
    pixels = np.concatenate(pooled)
    return {m: stain_statistics(pixels, m, max_pixels=None) for m in methods}


def statistics_problems(stats: object, method: str) -> list[str]:
    """Why ``stats`` are not valid statistics of ``method`` (empty when they are)."""
    if not isinstance(stats, dict) or stats.get("method") != method:
        return [f"{method} statistics must be a dict with 'method': {method!r}"]
    problems = []
    for key, shape in STATISTICS_SHAPES[method].items():
        try:
            value = np.asarray(stats.get(key), dtype=np.float64)
        except (TypeError, ValueError):
            value = np.zeros(0)
        if value.shape != shape or not np.isfinite(value).all():
            problems.append(f"{method} '{key}' must be {shape} finite numbers")
        elif key in ("max_concentrations", "std") and (value <= 0).any():
            problems.append(f"{method} '{key}' must be positive")
        elif key == "stain_vectors" and not np.allclose(np.linalg.norm(value, axis=1), 1, 1e-3):
            problems.append(f"{method} 'stain_vectors' must be unit vectors")
        elif key == "stain_vectors" and np.linalg.norm(np.cross(*value)) < MIN_STAIN_SINE:
            problems.append(f"{method} 'stain_vectors' must be two different directions")
    return problems


class Normaliser:
    """Maps RGB uint8 pixels (..., 3), e.g. a batch B x H x W x 3, of one slide onto reference
    colours: the same shape and dtype back; each output pixel depends on that input pixel only.

    ``method`` is ``none``, ``macenko`` or ``reinhard``; ``source`` (the slide's, from
    `slide_stain_statistics`) and ``reference`` (e.g. ``card.stain_reference[method]``) are
    statistics of that method (not needed for ``none``). Thread-safe: it holds constants only.
    """

    def __init__(self, method: str, source: dict | None = None, reference: dict | None = None):
        _check_method(method, METHODS)
        self.method = method
        if method == "none":
            return
        for name, stats in (("slide", source), ("reference", reference)):
            problems = statistics_problems(stats, method)
            if problems:
                raise StainError(
                    f"Cannot normalise with {method}: the {name} statistics are invalid "
                    f"({'; '.join(problems)}). Estimate them with slide_stain_statistics or "
                    "stain_reference."
                )
        self.source, self.reference = source, reference
        if method == "macenko":
            self._od_map = _macenko_map(source, reference)
        else:
            self._scale = np.float32(reference["std"]) / np.float32(source["std"])
            self._shift = np.float32(reference["mean"]) - np.float32(source["mean"]) * self._scale

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        rgb = check_rgb(rgb)
        if rgb.dtype != np.uint8:
            raise StainError(f"Normaliser takes uint8 RGB pixels, got {rgb.dtype}.")
        if self.method == "none":
            return rgb
        if self.method == "macenko":
            return od_to_rgb(mix_channels(rgb_to_od(rgb), self._od_map))
        normalised = lab_to_rgb(rgb_to_lab(rgb) * self._scale + self._shift)
        od = np.linalg.norm(rgb_to_od(rgb), axis=-1, keepdims=True)
        weight = np.clip((od - GLASS_OD) / (BETA - GLASS_OD), 0.0, 1.0)
        return np.rint(rgb + weight * (normalised.astype(np.float32) - rgb)).astype(np.uint8)

    def settings(self) -> dict:
        """JSON-able description (method and both statistics), e.g. for a run's store."""
        if self.method == "none":
            return {"method": "none"}
        return {"method": self.method, "source": self.source, "reference": self.reference}


def _stain_matrix(stats: dict) -> StainMatrix:
    hema, eosin = np.asarray(stats["stain_vectors"], np.float64)
    residual = np.cross(hema, eosin)
    return StainMatrix(np.stack([hema, eosin, residual]), ("hematoxylin", "eosin", "residual"))


def _macenko_map(source: dict, reference: dict) -> np.ndarray:
    """3 x 3 matrix taking a pixel's OD (row) from the slide's stains to the reference's."""
    scale = np.asarray(reference["max_concentrations"]) / np.asarray(source["max_concentrations"])
    src, ref = _stain_matrix(source), _stain_matrix(reference)
    return (src.inverse @ np.diag([*scale, 1.0]) @ ref.vectors).astype(np.float32)


def _check_method(method: str, allowed) -> None:
    if method not in allowed:
        raise StainError(
            f"Unknown stain normalisation method {method!r}; choose one of {', '.join(allowed)}."
        )
