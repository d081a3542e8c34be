"""Paired crops from rectangles drawn on a slide (H&E + registered IHC), for fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vstain.errors import RegionError
from vstain.io import Slide


@dataclass(frozen=True)
class Region:
    """A rectangle (x, y, w, h) in level-0 H&E pixels; ``validation`` keeps it for scoring."""

    x: int
    y: int
    w: int
    h: int
    validation: bool = False


def split_regions(regions: list[Region]) -> tuple[list[Region], list[Region]]:
    """(training, validation) regions; an error when either is empty."""
    train = [r for r in regions if not r.validation]
    val = [r for r in regions if r.validation]
    if not train:
        raise RegionError("Mark at least one region for training (not validation).")
    return train, val


class RegionCrops(torch.utils.data.Dataset):
    """Crops of ``crop`` px lying wholly inside the regions, H&E and IHC read at the same place.

    Training crops are random, drawn by ``(seed, index)`` (regions weighted by area); validation
    crops (``fixed=True``) are a grid over each region, the same every time. The IHC slide must
    already be in the H&E's pixel frame (registered and resampled, or a same-section restain).
    """

    def __init__(
        self,
        he: Slide,
        ihc: Slide,
        regions: list[Region],
        crop: int,
        *,
        fixed: bool = False,
        length: int = 1000,
        seed: int = 0,
    ):
        if he.shape != ihc.shape:
            raise RegionError(
                f"The H&E ({he.shape}) and IHC ({ihc.shape}) differ in size; "
                "register and resample the IHC onto the H&E first."
            )
        for r in regions:
            he_h, he_w = he.shape
            if r.w < crop or r.h < crop:
                raise RegionError(
                    f"Region {r.x},{r.y} of {r.w} x {r.h} px is smaller than the "
                    f"{crop} px crop; draw it larger or lower the crop size."
                )
            if r.x < 0 or r.y < 0 or r.x + r.w > he_w or r.y + r.h > he_h:
                raise RegionError(
                    f"Region {r.x},{r.y},{r.w},{r.h} lies outside the slide ({he_w} x {he_h} px)."
                )
        self.he, self.ihc, self.regions, self.crop = he, ihc, regions, crop
        self.seed = seed
        self.origins = self._grid() if fixed else None
        self.length = len(self.origins) if fixed else length
        areas = np.array([r.w * r.h for r in regions], float)
        self.weights = areas / areas.sum()

    def _grid(self) -> list[tuple[int, int]]:
        origins = []
        for r in self.regions:
            for y in range(r.y, r.y + r.h - self.crop + 1, self.crop):
                for x in range(r.x, r.x + r.w - self.crop + 1, self.crop):
                    origins.append((x, y))
        return origins

    def origin(self, index: int) -> tuple[int, int]:
        """Top-left (x, y) of crop ``index``."""
        if self.origins is not None:
            return self.origins[index]
        rng = np.random.default_rng([self.seed, index])
        r = self.regions[rng.choice(len(self.regions), p=self.weights)]
        return (
            int(rng.integers(r.x, r.x + r.w - self.crop + 1)),
            int(rng.integers(r.y, r.y + r.h - self.crop + 1)),
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        x, y = self.origin(index)
        he = self.he.read_region(x, y, self.crop, self.crop)
        ihc = self.ihc.read_region(x, y, self.crop, self.crop)

        def tensor(a):
            return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float() / 255

        return {"he": tensor(he), "ihc": tensor(ihc), "name": f"x{x}_y{y}"}
