"""Slides through OpenSlide: MIRAX (MRXS), Hamamatsu VMS / VMU / NDPI, Leica SCN, Ventana BIF,
DICOM WSI and the other formats OpenSlide reads, as the same lazy dask pyramid as every reader.

One ``openslide.OpenSlide`` handle serves all threads: OpenSlide documents that an ``openslide_t``
may be used from several threads at once without locking, its C calls run without the GIL
(ctypes), and so does openslide-python's un-premultiplying of the pixels. What is left per tile
is a few whole-array numpy operations (composition on white), which release the GIL too.

OpenSlide returns RGBA with alpha 0 where nothing was scanned (MIRAX and VMS gaps, slide edges)
and partial alpha at the edges of scanned areas. Pixels are composed on white glass: ``rgb * a /
255 + 255 - a``. openslide-python hands out un-premultiplied colour (premultiplied / a, rounded
down), so partially transparent pixels may differ by 1 level from composing OpenSlide's
premultiplied values exactly; opaque and fully transparent pixels are exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vstain.errors import SlideError
from vstain.io.lazy import lazy_array
from vstain.io.slide import Slide
from vstain.io.tiff_reader import MAX_PLAUSIBLE_PIXEL_SIZE

#: Dask chunks are the smallest multiple of the file's tile size at least this large (px).
MIN_CHUNK = 512
#: Chunk side when OpenSlide does not report a tile size.
DEFAULT_CHUNK = 512
INSTALL_HINT = "Install it with `pip install openslide-python openslide-bin`."


def _openslide():
    """The ``openslide`` module; SlideError saying how to install it when it is missing."""
    try:
        import openslide
    except (ImportError, OSError) as e:  # OSError: the shared library failed to load
        raise SlideError(f"Reading this slide needs OpenSlide ({e}). {INSTALL_HINT}") from e
    return openslide


def openslide_vendor(path: Path) -> str | None:
    """OpenSlide's name for the format of ``path`` (``aperio``, ``mirax``, ``dicom``, ...), or
    None when OpenSlide does not recognise it."""
    return _openslide().OpenSlide.detect_format(str(path))


def compose_on_white(rgba: np.ndarray) -> np.ndarray:
    """Un-premultiplied RGBA (..., 4) uint8 -> RGB (..., 3) uint8 composed on white glass.

    ``round(c * a / 255 + 255 - a)`` per channel, exact in integers; opaque pixels are unchanged,
    fully transparent ones become white.
    """
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    if alpha.min(initial=255) == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.uint32)
    composed = (rgb * a + 255 * (255 - a) + 127) // 255
    return composed.astype(np.uint8)


class OpenSlideLevel:
    """Array-like (Y, X, 3) uint8 over one level of an OpenSlide handle, for `lazy_array`.

    Indexing with slices (as dask does) reads only that region. Pickling reopens the file by
    path, so levels can travel to dask.distributed workers.
    """

    def __init__(self, path: Path, level: int, handle=None):
        self.path = path
        self.level = level
        self.handle = _open_handle(path) if handle is None else handle
        width, height = self.handle.level_dimensions[level]
        self.downsample = float(self.handle.level_downsamples[level])
        self.shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __reduce__(self):
        return (OpenSlideLevel, (self.path, self.level))

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        ys, xs, cs = (*key, *(slice(None),) * (3 - len(key)))
        y0, y1, sy = ys.indices(self.shape[0])
        x0, x1, sx = xs.indices(self.shape[1])
        # OpenSlide takes the region's corner in level-0 pixels.
        origin = (round(x0 * self.downsample), round(y0 * self.downsample))
        image = self.handle.read_region(origin, self.level, (x1 - x0, y1 - y0))
        return compose_on_white(np.asarray(image))[::sy, ::sx, cs]


def _open_handle(path: Path):
    openslide = _openslide()
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as e:
        raise SlideError(
            f"OpenSlide does not recognise {path} ({e}): it is not a format OpenSlide reads, or "
            "it is corrupt or truncated. Copy or export it again, or convert it, e.g. to OME-TIFF "
            "with bfconvert or QuPath."
        ) from e
    except openslide.OpenSlideError as e:
        raise SlideError(
            f"OpenSlide cannot read {path} ({e}). The file (or a file of its folder, for MIRAX, "
            "VMS and DICOM) is corrupt, truncated or missing; copy or export the slide again."
        ) from e


def open_openslide(path: Path) -> Slide:
    """Open ``path`` lazily through OpenSlide; SlideError when OpenSlide cannot read it."""
    handle = _open_handle(path)
    props = handle.properties
    levels = []
    for k in range(handle.level_count):
        source = OpenSlideLevel(path, k, handle)
        tile = int(props.get(f"openslide.level[{k}].tile-width", 0)) or DEFAULT_CHUNK
        chunk = tile * -(-MIN_CHUNK // tile)
        levels.append(lazy_array(source, path, (chunk, chunk, 3), f"openslide-level{k}"))
    pixel_size, size_metadata = _pixel_size(props)
    power = props.get("openslide.objective-power")
    metadata = {
        "format": props.get("openslide.vendor", "openslide"),
        "source": str(path),
        "vendor": props.get("openslide.vendor"),
        "magnification": None if power is None else float(power),
        **size_metadata,
    }
    return Slide(path, levels, pixel_size, metadata)


def _pixel_size(props) -> tuple[float | None, dict]:
    """Micrometres per pixel from ``openslide.mpp-x``, ignoring display resolutions."""
    mpp = props.get("openslide.mpp-x")
    if mpp is None:
        return None, {"pixel_size_source": None}
    pixel_size = float(mpp)
    if not 0 < pixel_size <= MAX_PLAUSIBLE_PIXEL_SIZE:
        note = f"openslide.mpp-x of {pixel_size} um/px ignored: not a microscope pixel size"
        return None, {"pixel_size_source": None, "pixel_size_note": note}
    return pixel_size, {"pixel_size_source": "OpenSlide openslide.mpp-x"}
