"""How each model output is stored by the tile engine, and point outputs drawn as rasters."""

from __future__ import annotations

import numpy as np

from vstain.tiles import OutputSpec

#: How each model output is stored (see OutputSpec); background = white glass / nothing.
OUTPUT_SPECS = {
    "ihc": OutputSpec("ihc", "rgb", 3, background=1.0),
    "uncertainty": OutputSpec("uncertainty", "scalar", 1, background=0.0),
    "segmentation": OutputSpec("segmentation", "instances", 1, background=0),
    "keypoints": OutputSpec("keypoints", "labels", 1, background=0),
}


def output_specs(outputs: list[str]) -> list[OutputSpec]:
    """Raster outputs of a model card that the tile engine stores."""
    return [OUTPUT_SPECS[name] for name in outputs if name in OUTPUT_SPECS]


def keypoint_raster(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """B x N x 2 keypoints ((x, y) in tile pixels) as B x 1 x H x W labels: 1 at each keypoint's
    pixel, 0 elsewhere, so the tile engine crops, stores and resumes them like any raster."""
    raster = np.zeros((len(points), 1, height, width), np.int32)
    for b, xy in enumerate(np.asarray(points)):
        col, row = np.rint(xy[:, 0]).astype(int), np.rint(xy[:, 1]).astype(int)
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        raster[b, 0, row[inside], col[inside]] = 1
    return raster


def rasterised(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A model's outputs for the tile engine: point outputs drawn into rasters of the tile size."""
    if "keypoints" not in outputs:
        return outputs
    height, width = outputs["ihc"].shape[-2:]
    return {**outputs, "keypoints": keypoint_raster(outputs["keypoints"], height, width)}
