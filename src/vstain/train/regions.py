"""Paired crops from rectangles on a slide pair, for fine-tuning on regions a user outlined.

The H&E is a `Slide`; the IHC is a `Slide` of the same geometry (already registered) or any
callable ``(x, y, w, h, level) -> (h, w, 3) uint8`` giving the IHC under an H&E region, such as
``functools.partial(registration.warp_ihc_tile, ihc_slide)``. Rectangles are ``Region``\\ s in
level-0 pixels; crops are read at ``level`` and lie strictly inside them.

- `RegionCrops`: random crops of the training rectangles. Item ``i`` of epoch ``e`` draws from
  ``numpy.random.default_rng([seed, e, i])``: a rectangle (chance proportional to its number of crop
  positions), then the crop's corner. ``set_epoch`` picks the epoch (the trainer calls it).
- `RegionGrid`: fixed crops for validation, a grid over each rectangle, the last row and column
  shifted inward so that they stay inside.
- `region_datasets`: both from one list of rectangles, split by region.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from vstain.errors import RegionError, SlideError
from vstain.io.slide import Slide
from vstain.train.datasets import Transform, augment_pair, random_augmentation

IhcReader = Callable[[int, int, int, int, int], np.ndarray]


@dataclass(frozen=True)
class Region:
    """A rectangle ``x, y, w, h`` in level-0 pixels of the H&E; ``validation`` keeps it aside."""

    x: int
    y: int
    w: int
    h: int
    validation: bool = False


def split_regions(
    regions: Sequence[Region], val_fraction: float = 0.0, seed: int = 0
) -> tuple[list[Region], list[Region]]:
    """Training and validation rectangles.

    When any rectangle is flagged ``validation``, the flags decide. Otherwise ``val_fraction`` of
    the rectangles (rounded, at least one when the fraction is above 0), drawn with ``seed``, are
    for validation. At least one rectangle must remain for training.
    """
    regions = list(regions)
    if not 0 <= val_fraction < 1:
        raise RegionError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if any(r.validation for r in regions):
        chosen = {i for i, r in enumerate(regions) if r.validation}
    else:
        n_val = max(round(val_fraction * len(regions)), 1) if val_fraction > 0 else 0
        chosen = set(np.random.default_rng(seed).permutation(len(regions))[:n_val].tolist())
    val = [r for i, r in enumerate(regions) if i in chosen]
    train = [r for i, r in enumerate(regions) if i not in chosen]
    if not train:
        raise RegionError(
            f"All {len(regions)} regions are for validation; outline more regions or use a smaller "
            "validation share so that some remain for training."
        )
    return train, val


def _chw(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> 3 x H x W float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32) / 255)


class PairedRegions:
    """An H&E slide, its IHC reader and rectangles as crop-sized boxes at ``level``.

    ``boxes`` are (x0, y0, x1, y1) in ``level`` pixels: each rectangle shrunk to whole pixels of
    that level. A rectangle off the slide or smaller than ``crop`` raises RegionError.
    """

    def __init__(
        self,
        he: Slide,
        ihc: Slide | IhcReader,
        regions: Sequence[Region],
        crop: int,
        level: int = 0,
    ):
        if not regions:
            raise RegionError("No regions given: outline at least one rectangle to train on.")
        if crop < 1 or not 0 <= level < len(he.levels):
            raise RegionError(
                f"crop must be >= 1 px and level one of 0..{len(he.levels) - 1} of "
                f"{he.path.name}; got crop {crop}, level {level}."
            )
        self.he, self.crop, self.level = he, crop, level
        self.read_ihc = self._ihc_reader(ihc)
        self.regions = list(regions)
        self.boxes = [self._box(r) for r in self.regions]

    def _ihc_reader(self, ihc: Slide | IhcReader) -> IhcReader:
        if not isinstance(ihc, Slide):
            return ihc
        if ihc.shape != self.he.shape or len(ihc.levels) <= self.level:
            raise SlideError(
                f"The IHC slide {ihc.path.name} ({ihc.shape[1]} x {ihc.shape[0]} px, "
                f"{len(ihc.levels)} levels) does not have the geometry of the H&E "
                f"{self.he.path.name} ({self.he.shape[1]} x {self.he.shape[0]} px): register it "
                "first and pass a reader of the registered IHC."
            )
        return ihc.read_region

    def _box(self, r: Region) -> tuple[int, int, int, int]:
        height, width = self.he.shape
        if r.w <= 0 or r.h <= 0 or r.x < 0 or r.y < 0 or r.x + r.w > width or r.y + r.h > height:
            raise RegionError(
                f"Region x={r.x}, y={r.y}, w={r.w}, h={r.h} is not inside {self.he.path.name} "
                f"({width} x {height} px). Draw regions on the slide."
            )
        f = self.he.downsamples[self.level]
        box = (math.ceil(r.x / f), math.ceil(r.y / f), int((r.x + r.w) // f), int((r.y + r.h) // f))
        if box[2] - box[0] < self.crop or box[3] - box[1] < self.crop:
            raise RegionError(
                f"Region x={r.x}, y={r.y}, w={r.w}, h={r.h} of {self.he.path.name} is "
                f"{box[2] - box[0]} x {box[3] - box[1]} px at level {self.level}, smaller than the "
                f"crop of {self.crop} px. Draw a larger region or choose a smaller crop."
            )
        return box

    def item(self, x: int, y: int, augment: Transform | None = None) -> dict:
        """The crop with top-left corner (x, y) in ``level`` pixels: "he", "ihc", "name"
        (``augment``: turned, flipped and stain-perturbed by that transform)."""
        c = self.crop
        he = self.he.read_region(x, y, c, c, self.level)
        ihc = np.asarray(self.read_ihc(x, y, c, c, self.level))
        if ihc.shape != (c, c, 3) or ihc.dtype != np.uint8:
            raise SlideError(
                f"The IHC reader gave {ihc.dtype} {ihc.shape} for a {c} x {c} crop; it must "
                "return (h, w, 3) uint8 RGB for the region asked."
            )
        if augment is not None:
            he, ihc = augment_pair(he, ihc, augment)
        return {"he": _chw(he), "ihc": _chw(ihc), "name": f"level{self.level}-x{x}-y{y}"}


class RegionCrops(Dataset):
    """Random crops inside the rectangles of ``source``; ``length`` items per epoch.

    ``length`` defaults to the number of non-overlapping crops that fit in the rectangles. With
    ``augment``, each crop is also turned, flipped and its H&E stains perturbed, as in
    `vstain.train.datasets` (drawn from the same per-item generator, after the corner).
    """

    def __init__(
        self,
        source: PairedRegions,
        *,
        seed: int = 0,
        length: int | None = None,
        augment: bool = False,
    ):
        self.source, self.seed, self.epoch, self.augment = source, seed, 0, augment
        c = source.crop
        self.positions = np.array(
            [(x1 - x0 - c + 1) * (y1 - y0 - c + 1) for x0, y0, x1, y1 in source.boxes]
        )
        fits = sum(((x1 - x0) // c) * ((y1 - y0) // c) for x0, y0, x1, y1 in source.boxes)
        self.length = fits if length is None else length
        if self.length < 1:
            raise RegionError(f"length must be >= 1, got {length}.")

    def set_epoch(self, epoch: int) -> None:
        """Use the random crops of ``epoch`` from now on."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def corner(self, index: int) -> tuple[int, int]:
        """Top-left (x, y) of item ``index`` in the current epoch, in ``level`` pixels."""
        return self._corner(np.random.default_rng([self.seed, self.epoch, index]))

    def _corner(self, rng: np.random.Generator) -> tuple[int, int]:
        box = int(rng.choice(len(self.positions), p=self.positions / self.positions.sum()))
        x0, y0, x1, y1 = self.source.boxes[box]
        c = self.source.crop
        return int(rng.integers(x0, x1 - c + 1)), int(rng.integers(y0, y1 - c + 1))

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"item {index} of {self.length}")
        if not self.augment:
            return self.source.item(*self.corner(index))
        rng = np.random.default_rng([self.seed, self.epoch, index])
        x, y = self._corner(rng)
        return self.source.item(x, y, Transform(y, x, **random_augmentation(rng, square=True)))


def _grid_starts(start: int, stop: int, crop: int) -> list[int]:
    """Crop starts from ``start`` every ``crop`` px, the last moved inward to end at ``stop``."""
    return sorted({*range(start, stop - crop + 1, crop), stop - crop})


class RegionGrid(Dataset):
    """Fixed crops of ``source``: a grid over each rectangle (for validation)."""

    def __init__(self, source: PairedRegions):
        self.source = source
        c = source.crop
        self.corners = [
            (x, y)
            for x0, y0, x1, y1 in source.boxes
            for y in _grid_starts(y0, y1, c)
            for x in _grid_starts(x0, x1, c)
        ]

    def __len__(self) -> int:
        return len(self.corners)

    def __getitem__(self, index: int) -> dict:
        return self.source.item(*self.corners[index])


def region_datasets(
    he: Slide,
    ihc: Slide | IhcReader,
    regions: Sequence[Region],
    crop: int,
    *,
    level: int = 0,
    val_fraction: float = 0.0,
    seed: int = 0,
    length: int | None = None,
    augment: bool = False,
) -> tuple[RegionCrops, RegionGrid | None]:
    """Training crops (``augment``: see `RegionCrops`) and validation grid (None without
    validation regions), split by region."""
    train, val = split_regions(regions, val_fraction, seed)
    source = PairedRegions(he, ihc, train, crop, level)
    crops = RegionCrops(source, seed=seed, length=length, augment=augment)
    return crops, RegionGrid(PairedRegions(he, ihc, val, crop, level)) if val else None
