"""Where to stain: the visible part of a slide layer and the rectangles of a Shapes layer.

Regions are (x, y, w, h) in pixels of the slide layer's full-resolution level, clipped to it.
"""

from __future__ import annotations

import numpy as np

from vstain.errors import RegionError


def level0_shape(layer) -> tuple[int, int]:
    """(height, width) of an image layer's full-resolution level."""
    shape = layer.level_shapes[0] if layer.multiscale else layer.data.shape
    return int(shape[0]), int(shape[1])


def visible_world_box(viewer) -> tuple[np.ndarray, np.ndarray]:
    """World (y, x) corners (low, high) of what one canvas view box shows (grid mode included)."""
    camera = viewer.scene.camera
    centre = np.asarray(camera.center[-2:], dtype=float)
    half = np.asarray(viewer.canvas.viewbox_size(viewer.layers), dtype=float) / (2 * camera.zoom)
    return centre - half, centre + half


def world_box_to_region(layer, low, high) -> tuple[int, int, int, int]:
    """The slide pixels of ``layer`` under the world box (low, high), as (x, y, w, h).

    Raises `RegionError` when the box does not overlap the layer.
    """
    corners = [layer.world_to_data((y, x)) for y in (low[0], high[0]) for x in (low[1], high[1])]
    ys, xs = [c[0] for c in corners], [c[1] for c in corners]
    height, width = level0_shape(layer)
    # pixel i covers [i - 0.5, i + 0.5) in data coordinates
    x0, y0 = max(int(np.floor(min(xs) + 0.5)), 0), max(int(np.floor(min(ys) + 0.5)), 0)
    x1, y1 = min(int(np.ceil(max(xs) + 0.5)), width), min(int(np.ceil(max(ys) + 0.5)), height)
    if x1 <= x0 or y1 <= y0:
        raise RegionError(
            f"The area asked for does not overlap layer {layer.name!r}; pan or zoom to the slide "
            "(or draw the rectangle on it) and try again."
        )
    return x0, y0, x1 - x0, y1 - y0


def visible_region(viewer, layer) -> tuple[int, int, int, int]:
    """The part of ``layer``'s full-resolution level visible in the canvas, as (x, y, w, h)."""
    return world_box_to_region(layer, *visible_world_box(viewer))


def region_centre(region: tuple[int, int, int, int]) -> tuple[float, float]:
    """(x, y) centre of a region."""
    x, y, w, h = region
    return x + w / 2, y + h / 2


def rectangle_regions(shapes, layer) -> tuple[list[tuple[int, int, int, int]], int]:
    """Regions of ``layer`` under the rectangles of Shapes layer ``shapes``, and how many other
    shapes (ellipses, polygons, lines...) there were."""
    regions, others = [], 0
    for vertices, kind in zip(shapes.data, shapes.shape_type, strict=True):
        if kind != "rectangle":
            others += 1
            continue
        world = np.array([shapes.data_to_world(v)[-2:] for v in vertices])
        regions.append(world_box_to_region(layer, world.min(axis=0), world.max(axis=0)))
    return regions, others


def tiles_in_view(tiles, region: tuple[int, int, int, int], downsample: float) -> bool:
    """Whether any tile (core boxes in pixels of a level ``downsample`` times coarser than the
    region's) overlaps ``region`` (x, y, w, h at full resolution)."""
    x, y, w, h = (v / downsample for v in region)
    return any(
        t.core[0] < x + w and t.core[2] > x and t.core[1] < y + h and t.core[3] > y for t in tiles
    )
