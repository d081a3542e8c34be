"""Plain PNG and JPEG images. They cannot be decoded in parts, so the whole image is decoded on
the first read of any pixel and kept; opening reads only the header.

Headers are read with Pillow's format classes directly (not `PIL.Image.open`, whose
decompression-bomb limit would refuse slide-sized images); pixels are decoded by imagecodecs.
"""

from __future__ import annotations

import threading
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import JpegImagePlugin, PngImagePlugin

from vstain.errors import SlideError
from vstain.io.lazy import lazy_array
from vstain.io.limits import check_decode, check_sides
from vstain.io.pixels import check_channels, rgb_uint8
from vstain.io.slide import Slide

#: Chunk side of the dask array over a decoded plain image.
PLAIN_CHUNK = 1024
HEADER_READERS = {"png": PngImagePlugin.PngImageFile, "jpeg": JpegImagePlugin.JpegImageFile}
DECODERS = {"png": imagecodecs.png_decode, "jpeg": imagecodecs.jpeg8_decode}
#: Pillow modes read as colour; "P" is a palette, expanded to RGB(A) by the decoder.
COLOUR_MODES = {"RGB", "RGBA", "RGBX", "P", "PA"}
#: Channels of the grayscale Pillow modes (refused with an explanation).
GRAY_MODES = {"1": 1, "L": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "F": 1, "LA": 2, "La": 2}
#: Bytes per pixel a whole decode may take (16-bit RGBA), for the memory check before decoding.
DECODED_BYTES_PER_PIXEL = 8
#: JPEG start-of-scan and end-of-image markers.
JPEG_SOS, JPEG_EOI = b"\xff\xda", b"\xff\xd9"


def decode_image(path: Path, kind: str) -> np.ndarray:
    """Decode the whole PNG or JPEG at ``path`` to (Y, X, 3) uint8."""
    data = path.read_bytes()
    if kind == "jpeg" and data.rfind(JPEG_EOI) < data.rfind(JPEG_SOS):
        # libjpeg fills a truncated scan with grey and only warns: refuse it instead
        raise SlideError(
            f"{path} is a truncated JPEG (no end-of-image marker after its last scan); "
            "copy or export it again."
        )
    return rgb_uint8(DECODERS[kind](data), path)


class DecodedImage:
    """Array-like (Y, X, 3) uint8 over a PNG / JPEG, decoded once on first indexing."""

    def __init__(self, path: Path, kind: str, shape_yx: tuple[int, int]):
        self.path = path
        self.kind = kind
        self.shape = (*shape_yx, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self._pixels: np.ndarray | None = None
        self._lock = threading.Lock()

    def __getitem__(self, key) -> np.ndarray:
        with self._lock:
            if self._pixels is None:
                pixels = decode_image(self.path, self.kind)
                if pixels.shape != self.shape:
                    raise SlideError(
                        f"{self.path} decodes to {pixels.shape[:2]} px but its header says "
                        f"{self.shape[:2]}. The file is corrupt; export it again."
                    )
                self._pixels = pixels
        return self._pixels[key]


def open_plain(path: Path, kind: str) -> Slide:
    """Open a PNG (``kind`` "png") or JPEG ("jpeg") lazily as a one-level slide."""
    try:
        with HEADER_READERS[kind](path) as header:
            mode, (width, height) = header.mode, header.size
    except Exception as e:
        raise SlideError(
            f"{path} cannot be read as {kind.upper()} ({type(e).__name__}: {e}). The file is "
            "corrupt or truncated; copy or export it again."
        ) from e
    if mode in GRAY_MODES:
        check_channels(GRAY_MODES[mode], path)
    if mode not in COLOUR_MODES:
        raise SlideError(
            f"{path} is a {kind.upper()} in colour mode {mode}; vstain reads RGB images. "
            "Convert it to RGB (e.g. `magick in.jpg -colorspace sRGB out.png`)."
        )
    check_sides(path, [(height, width)])
    check_decode(path, (height, width), DECODED_BYTES_PER_PIXEL, f"the whole {kind.upper()}")
    image = DecodedImage(path, kind, (height, width))
    level = lazy_array(image, path, (PLAIN_CHUNK, PLAIN_CHUNK, 3), "decoded")
    metadata = {"format": kind, "source": str(path), "mode": mode}
    return Slide(path, [level], None, metadata)
