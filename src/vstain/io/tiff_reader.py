"""TIFF-family slides (Aperio SVS, OME-TIFF, other pyramidal TIFF, plain TIFF) through tifffile.

The first image series is read; its pyramid levels (separate pages in SVS, SubIFDs in OME-TIFF)
become dask arrays chunked along the file's tiles (or strips) and decoded only when read.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from xml.etree import ElementTree

import dask.array as da
import numpy as np
import tifffile
import zarr
from tifffile import PHOTOMETRIC
from tifffile.tifffile import svs_description_metadata

from vstain.errors import SlideError, VstainError
from vstain.io.lazy import lazy_array
from vstain.io.limits import check_decode, check_sides, shape_yx
from vstain.io.pixels import check_channels, palette_to_rgb, rgb_uint8_lazy, to_yxc
from vstain.io.slide import Slide
from vstain.io.units import to_micrometres

#: Micrometres per TIFF ResolutionUnit (2 inch, 3 centimetre; 4 and 5 are tifffile extensions).
MICROMETRES_PER_RESOLUTION_UNIT = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}
#: Resolution tags giving more micrometres per pixel than this are display resolutions (72 dpi
#: is 353 um/px), not microscope pixel sizes, and are ignored.
MAX_PLAUSIBLE_PIXEL_SIZE = 100.0
RGB_PHOTOMETRICS = (PHOTOMETRIC.RGB, PHOTOMETRIC.YCBCR)


class _TiffLog(logging.Filter):
    """Filter on tifffile's logger: records of threads inside `_captured` are kept in a list
    instead of reaching stderr; other threads log as usual."""

    def __init__(self):
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        captured = getattr(self.local, "records", None)
        if captured is None:
            return True
        captured.append(record)
        return False


_TIFF_LOG = _TiffLog()
logging.getLogger("tifffile").addFilter(_TIFF_LOG)


@contextmanager
def _captured():
    """Collect tifffile's log records of this thread (tifffile logs corrupt structures at ERROR
    level and goes on with what it could parse)."""
    _TIFF_LOG.local.records = records = []
    try:
        yield records
    finally:
        _TIFF_LOG.local.records = None


def open_tiff(path: Path) -> Slide:
    """Open a TIFF-family slide lazily; corrupt, truncated or non-RGB files raise `SlideError`."""
    with _captured() as log:
        try:
            tif = tifffile.TiffFile(path)
        except Exception as e:
            raise _unreadable(path, e) from e
        try:
            levels, pixel_size, metadata = _read_structure(tif, path, log)
        except BaseException as e:
            tif.close()
            if isinstance(e, Exception) and not isinstance(e, VstainError | MemoryError):
                # tifffile's properties raise many types for tag values out of range
                raise _unreadable(path, e) from e
            raise
    metadata["warnings"] = [r.getMessage() for r in log]
    return Slide(path, levels, pixel_size, metadata)


def _read_structure(
    tif: tifffile.TiffFile, path: Path, log: list[logging.LogRecord]
) -> tuple[list[da.Array], float | None, dict]:
    """Levels, pixel size and metadata of the first series, after the structure checks."""
    series = tif.series[0] if tif.series else None
    shape = series.keyframe.shape if series is not None else ()
    _check_log(log, path)
    if series is None or series.size == 0 or 0 in shape:
        _check_log(log, path, logging.WARNING)  # e.g. the first IFD is past the end
        raise SlideError(f"{path} has no pixels (an empty image). It is not a slide.")
    check_sides(path, [shape_yx(level.shape, level.axes) for level in series.levels])
    check_extents(series, path)
    levels = [_level(series, k, path) for k in range(len(series.levels))]
    pixel_size, metadata = _describe(tif, series, path)
    _check_log(log, path)
    return levels, pixel_size, metadata


def _check_log(log: list[logging.LogRecord], path: Path, level: int = logging.ERROR) -> None:
    """Raise `SlideError` if tifffile logged at ``level`` or above (by default errors: structures
    it could not parse)."""
    errors = [r.getMessage() for r in log if r.levelno >= level]
    if errors:
        raise SlideError(
            f"{path} is truncated or corrupt (tifffile: {errors[0][:200]}). Copy or export the "
            "file again."
        )


class TiffUnreadableError(SlideError):
    """tifffile cannot parse the file (another reader may: see `vstain.io.readers`)."""


def _unreadable(path: Path, error: Exception) -> SlideError:
    return TiffUnreadableError(
        f"{path} cannot be read as TIFF ({type(error).__name__}: {error}). The file is corrupt or "
        "truncated; copy or export it again."
    )


def check_extents(series: tifffile.TiffPageSeries, path: Path) -> None:
    """Raise `SlideError` if a page of ``series`` lists fewer or more tiles (strips) than its
    size needs, or if any tile lies beyond the end of the file.

    This catches truncated files at open time without decoding anything. Tiles with offset or
    byte count 0 are left to tifffile, which reads them as 0 (sparse files); `vstain info
    --check` lists them.
    """
    size = path.stat().st_size
    for k, level in enumerate(series.levels):
        for page in level.pages:
            if page is None:
                continue
            offsets = np.asarray(page.dataoffsets, np.int64)
            counts = np.asarray(page.databytecounts, np.int64)
            expected = math.prod(page.keyframe.chunked)
            if len(offsets) != expected or len(counts) != expected:
                raise SlideError(
                    f"{path} is truncated or corrupt: level {k} lists {len(offsets)} tile "
                    f"offsets and {len(counts)} byte counts for {expected} tiles. Copy or export "
                    "the file again."
                )
            end = int((offsets + counts)[counts > 0].max(initial=0))
            if end > size:
                raise SlideError(
                    f"{path} is truncated or corrupt: level {k} needs {end} bytes but the file "
                    f"has {size}. Copy or export the file again."
                )


def _level(series: tifffile.TiffPageSeries, k: int, path: Path) -> da.Array:
    """Level ``k`` as a lazy (Y, X, 3) uint8 dask array."""
    store = zarr.open_array(series.aszarr(level=k), mode="r")
    dims = list(store.attrs["_ARRAY_DIMENSIONS"])
    array = to_yxc(
        lazy_array(store, path, store.chunks, f"level{k}"),
        dims,
        {"s", "c"},
        path,
    )
    chunk = dict(zip(dims, store.chunks, strict=True))
    per_pixel = store.dtype.itemsize * math.prod(
        n for name, n in chunk.items() if name not in ("Y", "X")
    )
    check_decode(path, (chunk["Y"], chunk["X"]), per_pixel, f"one tile of level {k}")
    page = series.levels[k].keyframe
    if page.photometric == PHOTOMETRIC.PALETTE:
        return palette_to_rgb(array[..., 0], page.colormap)
    if page.photometric not in RGB_PHOTOMETRICS:
        check_channels(array.shape[-1], path)  # explains grayscale (1 or 2 channels)
        raise SlideError(
            f"{path} stores {array.shape[-1]} channels as {page.photometric.name} (not RGB); "
            "vstain needs an RGB brightfield H&E or IHC image. Export the slide as RGB."
        )
    return rgb_uint8_lazy(array, path)


def _describe(
    tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, path: Path
) -> tuple[float | None, dict]:
    """Pixel size (um/px) and metadata: vendor metadata first, then TIFF resolution tags."""
    page = series.levels[0].keyframe
    metadata = {
        "format": series.kind or "tiff",
        "source": str(path),
        "compression": page.compression.name.lower(),
        "vendor": None,
        "magnification": None,
    }
    pixel_size = None
    if tif.is_svs:
        svs = svs_description_metadata(tif.pages.first.description)
        pixel_size = svs.get("MPP")
        metadata.update(vendor="Aperio", magnification=svs.get("AppMag"))
        metadata["pixel_size_source"] = "Aperio MPP" if pixel_size else None
    elif tif.is_ome:
        pixel_size, ome = _ome_pixel_size(tif.ome_metadata, path)
        metadata.update(ome)
    if pixel_size is None:
        pixel_size, resolution = _resolution_pixel_size(page)
        metadata.update(resolution)
    return (None if pixel_size is None else float(pixel_size)), metadata


def _ome_pixel_size(xml: str, path: Path) -> tuple[float | None, dict]:
    """PhysicalSizeX of the first OME image in micrometres, and the objective magnification."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as e:
        note = f"OME-XML cannot be parsed ({e})"
        warnings.warn(f"{path}: {note}; pixel size unknown.", stacklevel=3)
        return None, {"pixel_size_note": note}
    pixels = next((e for e in root.iter() if e.tag.rpartition("}")[2] == "Pixels"), None)
    objective = next((e for e in root.iter() if e.tag.rpartition("}")[2] == "Objective"), None)
    magnification = None if objective is None else objective.get("NominalMagnification")
    metadata = {"magnification": None if magnification is None else float(magnification)}
    size = None if pixels is None else pixels.get("PhysicalSizeX")
    if size is None:
        return None, metadata
    unit = pixels.get("PhysicalSizeXUnit", "µm")
    pixel_size = to_micrometres(float(size), unit)
    if pixel_size is None:
        note = f"OME PhysicalSizeXUnit {unit!r} is not a length unit vstain knows"
        warnings.warn(f"{path}: {note}; pixel size unknown.", stacklevel=3)
        return None, {**metadata, "pixel_size_note": note}
    return pixel_size, {**metadata, "pixel_size_source": "OME PhysicalSizeX"}


def _resolution_pixel_size(page: tifffile.TiffPage) -> tuple[float | None, dict]:
    """Pixel size from XResolution / ResolutionUnit, or None when absent or implausible."""
    tag = page.tags.get("XResolution")
    unit = page.tags.valueof("ResolutionUnit", default=2)  # the TIFF default is inch
    per_unit = MICROMETRES_PER_RESOLUTION_UNIT.get(int(unit))
    if tag is None or per_unit is None or tag.value[0] == 0 or tag.value[1] == 0:
        return None, {}
    pixel_size = per_unit * tag.value[1] / tag.value[0]
    if pixel_size > MAX_PLAUSIBLE_PIXEL_SIZE:
        note = f"resolution tag of {pixel_size:.1f} um/px ignored: a display resolution"
        return None, {"pixel_size_note": note}
    return pixel_size, {"pixel_size_source": "TIFF XResolution"}
