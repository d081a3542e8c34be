"""napari layers over a tile engine output store, placed exactly over the slide they stain.

A layer's levels are read chunk by chunk into memory (`decoded_chunks`), once: the staining
process hands each finished tile's pixels over (`paste`), so `refresh` shows them without
decoding anything; a refresh without them (another writer) reads the store again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from vstain.io import open_ome_zarr_levels
from vstain.napari.decoded_chunks import CachedLevel, DecodedChunks
from vstain.tiles import OutputSpec, OutputStore
from vstain.tiles.store import COMPUTED

#: Layer name suffix per output.
SUFFIXES = {
    "ihc": "virtual IHC",
    "uncertainty": "uncertainty",
    "segmentation": "segmentation",
    "keypoints": "keypoints",
}
#: Outputs whose finished tiles' pixels the staining process hands over (keypoints are read).
PIXEL_OUTPUTS = ("ihc", "uncertainty", "segmentation")
KEYPOINT_STYLE = {"face_color": "yellow", "border_color": "black", "size": 8}
#: Uncertainty is in the IHC's [0, 1] intensity units.
UNCERTAINTY_LIMITS = (0.0, 1.0)


def aligned_placement(reference, downsample: float) -> dict:
    """scale / translate / units putting a level downsampled by ``downsample`` over ``reference``.

    Pixel j of the level covers pixels [j * d, (j + 1) * d) of the reference, whose pixel centres
    lie at integer data coordinates; so the translate moves by (d - 1) / 2 reference pixels.
    """
    scale = np.asarray(reference.scale[-2:], dtype=float)
    translate = np.asarray(reference.translate[-2:], dtype=float) + scale * (downsample - 1) / 2
    return {
        "scale": tuple(scale * downsample),
        "translate": tuple(translate),
        "units": tuple(str(u) for u in reference.units[-2:]),
    }


def output_layer_data(store: Path, spec: OutputSpec, name: str, placement: dict) -> tuple:
    """(data, kwargs, layer type) of one stored output: RGBA image, scalar image or labels."""
    chunks = DecodedChunks(open_ome_zarr_levels(store / spec.name))
    rgb = spec.kind == "rgb"
    data = [CachedLevel(chunks, k, rgb) for k in range(len(chunks.shapes))]
    if rgb:
        kwargs, kind = {"rgb": True}, "image"
    elif spec.kind == "scalar":
        kwargs = {"colormap": "magma", "contrast_limits": UNCERTAINTY_LIMITS}
        kind = "image"
    else:
        kwargs, kind = {}, "labels"
    kwargs |= {
        "name": name,
        "multiscale": len(data) > 1,
        "cache": False,
        "metadata": {
            "vstain_store": str(store),
            "vstain_output": spec.name,
            "vstain_chunks": chunks,
            "vstain_tile": int(open_ome_zarr_levels(store / spec.name)[0].chunks[-1]),
        },
        **placement,
    }
    return (data if len(data) > 1 else data[0]), kwargs, kind


class KeypointSource:
    """Keypoints of a store's finished tiles as (y, x) pixels of its level 0; each tile's chunk
    is read once, when its done flag is first seen, so refreshing costs only the new tiles."""

    def __init__(self, store: Path):
        self.store = Path(store)
        self._seen: set[tuple[int, int]] = set()
        self._points: list[np.ndarray] = [np.empty((0, 2))]

    def points(self) -> np.ndarray:
        group = zarr.open_group(self.store, mode="r")
        tile = int(group.attrs["vstain"]["tile"])
        done = np.asarray(group["done"][:])
        raster = open_ome_zarr_levels(self.store / "keypoints")[0]
        for i, j in zip(*np.nonzero(done == COMPUTED), strict=True):
            if (i, j) in self._seen:
                continue
            ys, xs = np.nonzero(raster[0, i * tile : (i + 1) * tile, j * tile : (j + 1) * tile])
            self._points.append(np.stack([ys + i * tile, xs + j * tile], axis=1).astype(float))
            self._seen.add((i, j))
        return np.concatenate(self._points)


def _add_keypoints(viewer, store: Path, name: str, placement: dict):
    source = KeypointSource(store)
    layer = viewer.add_points(
        source.points(),
        name=name,
        metadata={"vstain_store": str(store), "vstain_output": "keypoints"},
        **KEYPOINT_STYLE,
        **placement,
    )
    layer.metadata["vstain_keypoints"] = source
    return layer


def find_output_layer(viewer, store: Path, output: str):
    """The viewer's layer showing ``output`` of ``store``, or None."""
    for layer in viewer.layers:
        meta = layer.metadata
        if meta.get("vstain_store") == str(store) and meta.get("vstain_output") == output:
            return layer
    return None


def show_outputs(viewer, store: Path, reference, downsample: float, prefix: str) -> list:
    """Layers of every output in ``store`` (added if missing), aligned to ``reference``."""
    placement = aligned_placement(reference, downsample)
    layers = []
    for spec in OutputStore.open(store).specs.values():
        layer = find_output_layer(viewer, store, spec.name)
        name = f"{prefix} {SUFFIXES.get(spec.name, spec.name)}"
        if layer is None and spec.name == "keypoints":
            layer = _add_keypoints(viewer, store, name, placement)
        elif layer is None:
            data, kwargs, kind = output_layer_data(store, spec, name, placement)
            layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
        layers.append(layer)
    return layers


def paste(layers: list, shares: list[dict]) -> None:
    """Put the pixels of finished tiles (`TileDone.pixels` of the staining process) into the
    layers' decoded chunks."""
    for layer in layers:
        chunks = layer.metadata.get("vstain_chunks")
        output = layer.metadata.get("vstain_output")
        for share in shares:
            for level, y, x, block in share.get(output, ()) if chunks else ():
                chunks.paste(level, y, x, block)


def refresh(layers: list, *, final: bool = False, pasted: bool = False) -> None:
    """Show newly written tiles (and, when ``final``, update thumbnails too). ``pasted``: their
    pixels were handed over (`paste`), so nothing is read again but the levels the engine
    rebuilds at the end of a run; else the store is read again."""
    for layer in layers:
        if "vstain_keypoints" in layer.metadata:
            layer.data = layer.metadata["vstain_keypoints"].points()
            continue
        chunks = layer.metadata.get("vstain_chunks")
        if chunks is not None and not pasted:
            chunks.forget(range(len(chunks.shapes)))
        elif chunks is not None and final:
            tile = layer.metadata["vstain_tile"]
            chunks.forget([k for k in range(len(chunks.shapes)) if 2**k > tile])
        layer.refresh(thumbnail=final, extent=False, highlight=False)
