"""Layers for the Compare widget: the real IHC placed through a registration's affine, points
in slide pixels, and result layers placed over the H&E."""

from __future__ import annotations

import numpy as np

from vstain.napari.store_layers import aligned_placement
from vstain.registration.manual import fit_control_points
from vstain.registration.registration import Registration
from vstain.review.region import ReviewRegion

__all__ = [
    "fit_control_points",
    "order_for_grid",
    "put_layer",
    "region_placement",
    "show_registered",
    "world_to_pixels",
]

_SWAP = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)  # (x, y) <-> (y, x)


def show_registered(real, he, reg: Registration) -> None:
    """Put ``real``'s pixels where ``reg`` says they belong over ``he`` (the affine part; the
    image itself is not resampled)."""
    he_world = np.eye(3)
    he_world[:2, :2] = np.diag(he.scale[-2:])
    he_world[:2, 2] = he.translate[-2:]
    ihc_to_he = _SWAP @ np.linalg.inv(reg.matrix) @ _SWAP  # IHC (y, x) px -> H&E (y, x) px
    real.scale = (1.0, 1.0)
    real.translate = (0.0, 0.0)
    real.affine = he_world @ ihc_to_he


def world_to_pixels(layer, world_yx: np.ndarray) -> np.ndarray:
    """World (y, x) points to (x, y) level-0 pixels of ``layer``."""
    data = np.array([layer.world_to_data(p)[-2:] for p in np.asarray(world_yx)]).reshape(-1, 2)
    return data[:, ::-1]


def region_placement(he, region: ReviewRegion) -> dict:
    """scale / translate / units putting a `ReviewRegion`'s pixels over ``he``."""
    kwargs = aligned_placement(he, region.downsample)
    offset = np.array([region.y, region.x]) * np.array(kwargs["scale"])
    kwargs["translate"] = tuple(np.asarray(kwargs["translate"]) + offset)
    return kwargs


def put_layer(viewer, name: str, kind: str, data, **kwargs):
    """Replace the data of layer ``name`` (same kind) or add it."""
    if name in viewer.layers:
        viewer.layers.remove(name)
    return getattr(viewer, f"add_{kind}")(data, name=name, **kwargs)


def order_for_grid(viewer, names: list[str]) -> None:
    """Move the layers ``names`` (those present) to the end of the layer list in that order, so
    grid mode shows them first, side by side."""
    for name in names:
        if name in viewer.layers:
            viewer.layers.move(viewer.layers.index(name), len(viewer.layers))
