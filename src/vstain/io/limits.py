"""Ceilings checked before anything is allocated: image sizes read from headers, the pixels decoded
at once, and the nesting depth of JSON files.

A header can claim any size; these checks turn a corrupt or hostile header into a `SlideError`
instead of hours of work and gigabytes of memory. Two ceilings can be raised through environment
variables (docs/reliability.md):

- ``VSTAIN_MAX_SIDE``: pixels per side of any level of a slide (default `MAX_SIDE`);
- ``VSTAIN_MAX_DECODE_PIXELS``: pixels decoded at once: a whole PNG or JPEG, one TIFF tile or
  strip, one zarr chunk (default `MAX_DECODE_PIXELS`). Whatever it says, one decode must also fit
  in half of the machine's memory.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vstain.errors import SlideError, VstainError

#: Default largest side of a slide level, px (the largest scanners write about 150k).
MAX_SIDE = 200_000
#: Default largest image decoded at once, px (a 20000 x 20000 PNG: 1.2 GB as RGB).
MAX_DECODE_PIXELS = 20_000 * 20_000
#: Deepest nesting of JSON arrays / objects read (cards, GeoJSON); real files need under 10.
MAX_JSON_DEPTH = 64
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _env_limit(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise VstainError(f"{name} must be a positive integer (pixels), got {text!r}.")
    return value


def max_side() -> int:
    """The largest level side opened, px: ``VSTAIN_MAX_SIDE`` or `MAX_SIDE`."""
    return _env_limit("VSTAIN_MAX_SIDE", MAX_SIDE)


def max_decode_pixels() -> int:
    """The most pixels decoded at once: ``VSTAIN_MAX_DECODE_PIXELS`` or `MAX_DECODE_PIXELS`."""
    return _env_limit("VSTAIN_MAX_DECODE_PIXELS", MAX_DECODE_PIXELS)


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, or a smaller cgroup limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    try:
        cgroup = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        cgroup = "max"
    return min(total, int(cgroup)) if cgroup.isdigit() else total


def shape_yx(shape: Sequence[int], axes: Sequence[str]) -> tuple[int, int]:
    """(Y, X) sizes of an array with axis names ``axes`` (any case); the largest dimension for a
    missing one (such arrays are refused later, by `vstain.io.pixels.to_yxc`)."""
    sizes = dict(zip([a.lower() for a in axes], shape, strict=True))
    return sizes.get("y", max(shape)), sizes.get("x", max(shape))


def check_sides(path: Path, shapes_yx: list[tuple[int, int]]) -> None:
    """Raise `SlideError` if a level of ``shapes_yx`` (one per level) exceeds `max_side`."""
    limit = max_side()
    for k, (h, w) in enumerate(shapes_yx):
        if max(h, w) > limit:
            raise SlideError(
                f"{path} claims {w} x {h} px at level {k}, more than the {limit} px per side "
                "vstain opens: its header is corrupt, or raise VSTAIN_MAX_SIDE if it is real."
            )


def check_decode(path: Path, shape: tuple[int, ...], bytes_per_pixel: int, what: str) -> None:
    """Raise `SlideError` if decoding ``what`` (``shape`` pixels first, e.g. (Y, X) or (Y, X, C))
    at once would exceed `max_decode_pixels` or half the machine's memory."""
    h, w = int(shape[0]), int(shape[1])
    pixels, limit = h * w, max_decode_pixels()
    need = pixels * bytes_per_pixel
    memory = machine_memory()
    if pixels > limit or (memory is not None and need > memory // 2):
        raise SlideError(
            f"{path}: decoding {what} at once means {w} x {h} px ({need / 2**30:.1f} GiB), more "
            f"than vstain decodes ({limit} px, half the memory); convert it to a tiled pyramidal "
            "OME-TIFF (bfconvert, vips), or raise VSTAIN_MAX_DECODE_PIXELS if memory allows."
        )


def json_depth(text: str) -> int:
    """Deepest nesting of arrays and objects in JSON ``text`` (strings are skipped)."""
    skeleton = np.frombuffer(_STRING.sub("", text).encode(), np.uint8)
    step = np.isin(skeleton, np.frombuffer(b"[{", np.uint8)).astype(np.int32)
    step -= np.isin(skeleton, np.frombuffer(b"]}", np.uint8))
    return int(np.cumsum(step).max(initial=0))


def loads_bounded(text: str) -> object:
    """`json.loads`, refusing (ValueError) nesting deeper than `MAX_JSON_DEPTH` before parsing,
    where Python's parser would recurse until RecursionError."""
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested {depth} levels deep, more than {MAX_JSON_DEPTH}")
    return json.loads(text)


def finite_number(value: object) -> bool:
    """Whether ``value`` is an int or float (not a bool) and finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)
