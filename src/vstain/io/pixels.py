"""Pixel layout and format: stored arrays to (Y, X, 3) uint8, the only pixels a `Slide` holds.

Rules (also in docs/io.md): 3 channels are RGB; a 4th channel is alpha and is dropped; uint16 is
divided by 257 and rounded (so 65535 -> 255); floats must lie in [0, 1] and are scaled by 255 and
rounded; palette images go through their colormap; 1 or 2 channels (grayscale) are refused.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

from vstain.errors import SlideError

SUPPORTED_DTYPES = (np.uint8, np.uint16, np.float16, np.float32, np.float64)


def to_yxc(array: da.Array, axes: list[str], channel_axes: set[str], path: Path) -> da.Array:
    """Reorder ``array`` with axis names ``axes`` to (Y, X, C); C is 1 without a channel axis.

    Axes other than y, x and the first axis named in ``channel_axes`` must have length 1.
    """
    names = [a.lower() for a in axes]
    channel = next((i for i, a in enumerate(names) if a in channel_axes), None)
    index, kept = [], []
    for i, (name, n) in enumerate(zip(names, array.shape, strict=True)):
        if name in ("y", "x") or i == channel:
            index.append(slice(None))
            kept.append(name if i != channel else "c")
        elif n == 1:
            index.append(0)
        else:
            raise SlideError(
                f"{path} has {n} planes along axis '{axes[i]}'; vstain reads one 2-D RGB image "
                "per slide. Export a single plane (one focal plane / time point) as RGB."
            )
    if "y" not in kept or "x" not in kept:
        raise SlideError(f"{path} has axes {axes} without both y and x; it is not a 2-D image.")
    array = array[tuple(index)]
    if "c" not in kept:
        return array.transpose(kept.index("y"), kept.index("x"))[..., None]
    return array.transpose(kept.index("y"), kept.index("x"), kept.index("c"))


def check_channels(n_channels: int, path: Path) -> None:
    """Raise `SlideError` unless ``n_channels`` is 3 (RGB) or 4 (RGB + alpha)."""
    if n_channels in (3, 4):
        return
    if n_channels in (1, 2):
        kind = "grayscale" if n_channels == 1 else "grayscale + alpha"
        raise SlideError(
            f"{path} is a {kind} image ({n_channels} channel{'s' * (n_channels > 1)}). vstain "
            "needs an RGB brightfield H&E or IHC image. Export the slide as RGB from the scanner "
            "software, or convert it (e.g. `magick in.png -type TrueColor out.png`); "
            "fluorescence images are not supported."
        )
    raise SlideError(
        f"{path} has {n_channels} channels; vstain reads RGB (3 channels) or RGBA (4) brightfield "
        "images. Export the slide as RGB."
    )


def check_dtype(dtype: np.dtype, path: Path) -> None:
    """Raise `SlideError` unless pixels of ``dtype`` can be converted to uint8."""
    if np.dtype(dtype) not in [np.dtype(t) for t in SUPPORTED_DTYPES]:
        raise SlideError(
            f"{path} stores pixels as {np.dtype(dtype)}; vstain reads uint8, uint16 or float "
            "(in [0, 1]) RGB images. Convert the slide to 8-bit RGB."
        )


def to_uint8(block: np.ndarray, path: Path) -> np.ndarray:
    """Convert one block of uint8 / uint16 / float pixels to uint8 (see the module rules)."""
    if block.dtype == np.uint8:
        return block
    if block.dtype == np.uint16:
        return ((block.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if block.size and not (np.isfinite(block).all() and block.min() >= 0 and block.max() <= 1):
        raise SlideError(
            f"{path} holds floating-point pixels outside [0, 1] (min {np.nanmin(block)}, max "
            f"{np.nanmax(block)}, or NaN). vstain reads float images as intensities in [0, 1]; "
            "save the slide as 8-bit RGB instead."
        )
    return np.rint(block.astype(np.float32) * 255.0).astype(np.uint8)


def rgb_uint8(image: np.ndarray, path: Path) -> np.ndarray:
    """(Y, X, C) numpy image -> (Y, X, 3) uint8."""
    check_channels(image.shape[-1], path)
    check_dtype(image.dtype, path)
    return to_uint8(image[..., :3], path)


def rgb_uint8_lazy(level: da.Array, path: Path) -> da.Array:
    """(Y, X, C) dask level -> (Y, X, 3) uint8, converted block by block when read."""
    check_channels(level.shape[-1], path)
    check_dtype(level.dtype, path)
    rgb = level[..., :3]
    if rgb.dtype == np.uint8:
        return rgb
    return rgb.map_blocks(to_uint8, path=path, dtype=np.uint8)


def colormap_lut(colormap: np.ndarray) -> np.ndarray:
    """TIFF colormap (3, N) uint16 -> lookup table (N, 3) uint8.

    TIFF colormaps are 16-bit; values are divided by 257 and rounded. Colormaps whose values all
    fit in 8 bits (written by some tools against the specification) are used as they are.
    """
    cmap = np.asarray(colormap)
    lut = cmap if cmap.max() <= 255 else (cmap.astype(np.uint32) + 128) // 257
    return np.ascontiguousarray(lut.T.astype(np.uint8))


def palette_to_rgb(indices: da.Array, colormap: np.ndarray) -> da.Array:
    """(Y, X) palette indices -> (Y, X, 3) uint8 through the TIFF ``colormap``, lazily."""
    return indices.map_blocks(
        _lookup,
        lut=colormap_lut(colormap),
        dtype=np.uint8,
        new_axis=2,
        chunks=(*indices.chunks, (3,)),
    )


def _lookup(block: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return lut[block]
