"""A region of a virtual IHC store paired with the registered real IHC, at a readable size.

The store was made at one H&E level (its settings say which); its own pyramid halves from there.
`ReviewRegion.plan` picks the store level at which an H&E region fits ``max_side`` pixels, and
`ReviewRegion.read` returns the `RegionPair` for `vstain.review.maps`: tiles the engine has
not computed yet (alpha 0) count as not covered, like IHC outside the real slide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vstain.errors import RegionError
from vstain.io import open_ome_zarr_levels
from vstain.io.slide import Slide
from vstain.registration.registration import Registration
from vstain.review.maps import RegionPair
from vstain.tiles import OutputStore


@dataclass(frozen=True)
class ReviewRegion:
    """Pixels (x, y, width, height) of level ``level`` of a store's IHC, which is ``downsample``
    times coarser than the H&E's level 0."""

    registration: Registration
    store: Path
    level: int
    downsample: float
    x: int
    y: int
    width: int
    height: int

    @classmethod
    def plan(
        cls,
        registration: Registration,
        he: Slide,
        store: str | Path,
        region: tuple[int, int, int, int],
        max_side: int,
    ) -> ReviewRegion:
        """The store level at which ``region`` (x, y, w, h in H&E level-0 px) is at most
        ``max_side`` px on its longer side (or the store's coarsest level)."""
        store = Path(store)
        base = he.downsamples[OutputStore.open(store).settings["level"]]
        levels = open_ome_zarr_levels(store / "ihc")
        x, y, w, h = region
        level = min(max(0, math.ceil(math.log2(max(w, h) / (base * max_side)))), len(levels) - 1)
        ds = base * 2**level
        _, height, width = levels[level].shape
        x0, y0 = int(x // ds), int(y // ds)
        x1, y1 = min(math.ceil((x + w) / ds), width), min(math.ceil((y + h) / ds), height)
        if x1 <= x0 or y1 <= y0:
            raise RegionError(
                f"The region x={x}, y={y}, w={w}, h={h} is outside the virtual IHC; pan to the "
                "stained part of the slide."
            )
        return cls(registration, store, level, ds, x0, y0, x1 - x0, y1 - y0)

    def read(self, ihc: Slide) -> RegionPair:
        """Virtual IHC of the region (white where not computed) and the real IHC warped onto it."""
        array = open_ome_zarr_levels(self.store / "ihc")[self.level]
        rgba = np.asarray(
            array[:, self.y : self.y + self.height, self.x : self.x + self.width]
        ).transpose(1, 2, 0)
        computed = rgba[..., 3] > 0
        virtual = np.where(computed[..., None], rgba[..., :3], 255).astype(np.uint8)
        real, covered = self.registration.warp_ihc_region(
            ihc, self.x, self.y, self.width, self.height, self.downsample
        )
        return RegionPair(virtual, real, covered & computed)


#: Longest side (px) of the tile K-Stain's detector looks at for the review overlay: the tile
#: size its keypoint windows were trained and measured on (docs/models/k_stain.md).
KEYPOINT_SIDE = 256


def keypoint_pairs(
    model, registration: Registration, he: Slide, ihc: Slide, region: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K-Stain keypoints of the H&E and of the registered real IHC in one tile at the centre of
    ``region`` (H&E level 0, x, y, w, h): two (N, 2) arrays of level-0 (x, y) H&E pixels, and
    which pairs agree with K-Stain's fitted affine (N bools: residual below the model's
    ``robust_px``, all when it is 0). Their difference is what the registration leaves
    misaligned, as K-Stain sees it."""
    import torch

    m = model.size_multiple
    x, y, w, h = region
    side_w = max(m, min(w, KEYPOINT_SIDE) // m * m)
    side_h = max(m, min(h, KEYPOINT_SIDE) // m * m)
    x0 = int(np.clip(x + (w - side_w) // 2, 0, max(he.shape[1] - side_w, 0)))
    y0 = int(np.clip(y + (h - side_h) // 2, 0, max(he.shape[0] - side_h, 0)))
    he_tile = he.read_region(x0, y0, side_w, side_h)
    ihc_tile = registration.warp_ihc_region(ihc, x0, y0, side_w, side_h)[0]
    device = next(model.parameters()).device

    def tensor(rgb: np.ndarray):
        return torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div(255)[None].to(device)

    found = model.correspond(tensor(he_tile), tensor(ihc_tile))
    offset = np.array([x0, y0], float)
    residual = found.residual[0].norm(dim=1).cpu().numpy()
    limit = model.config["robust_px"] or np.inf
    return (
        found.he_keypoints[0].cpu().numpy() + offset,
        found.ihc_keypoints[0].cpu().numpy() + offset,
        residual < limit,
    )
