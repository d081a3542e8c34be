"""What both slide writers share: their input, their output path and their progress count."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import dask.array as da
import numpy as np

from vstain.errors import OutputExistsError, SlideError
from vstain.io.slide import Slide

ProgressCallback = Callable[[int, int], None]
ImageLike = Slide | Sequence[np.ndarray | da.Array] | np.ndarray | da.Array


def as_levels(image: ImageLike, pixel_size: float | None) -> tuple[list[da.Array], float | None]:
    """Levels (Y, X, 3) uint8 dask arrays, full resolution first, and the pixel size to write.

    ``image`` is a `Slide` (its pixel size is used unless ``pixel_size`` is given), a sequence of
    levels, or one array.
    """
    if isinstance(image, Slide):
        levels = list(image.levels)
        pixel_size = image.pixel_size if pixel_size is None else pixel_size
    elif isinstance(image, np.ndarray | da.Array):
        levels = [image]
    else:
        levels = list(image)
    levels = [da.asarray(level) for level in levels]
    _check_levels(levels)
    if pixel_size is not None and not (math.isfinite(pixel_size) and pixel_size > 0):
        raise SlideError(f"Pixel size must be a positive number of micrometres, got {pixel_size}.")
    return levels, None if pixel_size is None else float(pixel_size)


def _check_levels(levels: list[da.Array]) -> None:
    if not levels:
        raise SlideError("Nothing to write: the image has no levels.")
    for k, level in enumerate(levels):
        if level.ndim != 3 or level.shape[2] != 3 or level.dtype != np.uint8 or 0 in level.shape:
            raise SlideError(
                f"Level {k} has shape {level.shape} and dtype {level.dtype}; slides are written "
                "from non-empty (Y, X, 3) uint8 RGB arrays. Convert the image first."
            )
        previous = levels[k - 1].shape if k else level.shape
        if level.shape[0] > previous[0] or level.shape[1] > previous[1]:
            raise SlideError(
                f"Level {k} ({level.shape[:2]}) is larger than level {k - 1} "
                f"({levels[k - 1].shape[:2]}); give levels from full resolution down."
            )


def check_output(path: Path, overwrite: bool) -> None:
    """Raise `OutputExistsError` if ``path`` exists and ``overwrite`` is false; create its
    folder, or raise `SlideError` saying why it cannot be created."""
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} exists. Pass overwrite=True (--overwrite) to replace it, or choose another "
            "path."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SlideError(
            f"Cannot create the folder of {path}: {e.strerror}. Choose another output path."
        ) from e


def chunk_count(shape_yx: tuple[int, int], chunk: int) -> int:
    """Number of ``chunk`` x ``chunk`` tiles covering an image of ``shape_yx``."""
    return math.ceil(shape_yx[0] / chunk) * math.ceil(shape_yx[1] / chunk)


class Progress:
    """Counts finished tiles and reports ``(done, total)`` to an optional callback."""

    def __init__(self, total: int, callback: ProgressCallback | None):
        self.done = 0
        self.total = total
        self.callback = callback

    def step(self, n: int = 1) -> None:
        """Record ``n`` more finished tiles."""
        self.done += n
        if self.callback is not None:
            self.callback(self.done, self.total)
