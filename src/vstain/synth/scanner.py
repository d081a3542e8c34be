"""The scanner: illumination, focus blur, sensor noise, quantisation and JPEG.

All effects are functions of global pixel position, so a region rendered with a margin of
``blur_margin`` pixels and cropped is identical to the same pixels of a larger region. JPEG (4:4:4,
no chroma subsampling) codes each 8 x 8 block on its own, so compressing any region whose edges
lie on the global 8 px grid gives the same pixels too (`jpeg`).
"""

from __future__ import annotations

import imagecodecs
import numpy as np
from scipy import ndimage as ndi

from vstain.synth.hashing import rgb_noise, stream_key
from vstain.synth.noise import GridSampler, smoothstep
from vstain.synth.spec import Scan

_TRUNCATE = 3.0
#: The defocused image is computed in blocks of this side where any pixel needs it.
_BLUR_BLOCK = 128
#: Spacings (micrometres) of the illumination drift and of the focus map.
_UNEVEN_UM = 1500.0
_FOCUS_UM = 300.0


def blur_margin(scan: Scan) -> int:
    """Pixels of margin a region needs so that blur near its edge is exact."""
    return int(_TRUNCATE * max(scan.blur_sigma) + 0.5) + 1


def _sampler(
    seed: int, name: str, x0: int, y0: int, h: int, w: int, pixel_size: float
) -> GridSampler:
    return GridSampler(
        stream_key(seed, "scan", name),
        (x0 + np.arange(w)) * pixel_size,
        (y0 + np.arange(h)) * pixel_size,
    )


def illumination_od(
    scan: Scan, seed: int, name: str, x0: int, y0: int, h: int, w: int, pixel_size: float
) -> np.ndarray:
    """OD of the light path without tissue, (h, w, 3): glass tint, slow drift, field vignetting."""
    drift = scan.uneven_od * _sampler(seed, name, x0, y0, h, w, pixel_size).noise(
        "uneven", _UNEVEN_UM, 2
    )
    fx = (np.mod(x0 + np.arange(w), scan.field_px) / scan.field_px - 0.5) ** 2
    fy = (np.mod(y0 + np.arange(h), scan.field_px) / scan.field_px - 0.5) ** 2
    vignette = (2 * scan.vignette_od) * (fx[None, :] + fy[:, None]).astype(np.float32)
    drift += vignette
    od = drift[..., None] + np.asarray(scan.background_od, np.float32)
    return np.maximum(od, 0, out=od)


def defocus(
    scan: Scan, seed: int, name: str, x0: int, y0: int, h: int, w: int, pixel_size: float
) -> np.ndarray:
    """How out of focus each pixel is, 0 (best focus) to 1: mostly 0, with soft patches."""
    n = _sampler(seed, name, x0, y0, h, w, pixel_size).noise("focus", _FOCUS_UM, 2)
    return smoothstep(0.0, 1.8, n).astype(np.float32)


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return image
    return ndi.gaussian_filter(image, (sigma, sigma, 0), truncate=_TRUNCATE, mode="nearest")


def blur(intensity: np.ndarray, amount: np.ndarray, sigmas: tuple[float, float]) -> np.ndarray:
    """Blur of (h, w, 3) between the in-focus and the worst Gaussian ``sigmas``, mixed per pixel
    by ``amount`` (0-1). The defocused image is computed only in the blocks that use it, each
    with the kernel's radius around it, which gives the same values as blurring everything."""
    sharp, soft = sigmas
    out = _gaussian(intensity, sharp)
    r = int(_TRUNCATE * soft + 0.5)
    h, w = amount.shape
    for y0 in range(0, h, _BLUR_BLOCK):
        for x0 in range(0, w, _BLUR_BLOCK):
            inner = (slice(y0, y0 + _BLUR_BLOCK), slice(x0, x0 + _BLUR_BLOCK))
            t = amount[inner]
            if not t.any():
                continue
            ys, xs = max(y0 - r, 0), max(x0 - r, 0)
            part = _gaussian(intensity[ys : y0 + _BLUR_BLOCK + r, xs : x0 + _BLUR_BLOCK + r], soft)
            local = part[y0 - ys : y0 - ys + t.shape[0], x0 - xs : x0 - xs + t.shape[1]]
            out[inner] = (1 - t[..., None]) * out[inner] + t[..., None] * local
    return out


def expose(
    od: np.ndarray, scan: Scan, seed: int, name: str, x0: int, y0: int, pixel_size: float
) -> np.ndarray:
    """Scan an OD image of a region (h, w, 3) with origin (x0, y0): uint8 RGB, same shape.

    The region must include ``blur_margin(scan)`` pixels beyond those the caller keeps.
    """
    h, w = od.shape[:2]
    total = illumination_od(scan, seed, name, x0, y0, h, w, pixel_size)
    total += od
    np.negative(total, out=total)
    intensity = np.power(np.float32(10), total, out=total)
    intensity = blur(
        intensity, defocus(scan, seed, name, x0, y0, h, w, pixel_size), scan.blur_sigma
    )
    # Sensor noise grows with the square root of the light (shot noise).
    noise = rgb_noise(
        stream_key(seed, "scan", name, "sensor"),
        (x0 + np.arange(w))[None, :],
        (y0 + np.arange(h))[:, None],
    )
    noise *= np.sqrt(np.maximum(intensity, np.float32(0.05)))
    noise *= np.float32(scan.noise_std)
    counts = np.multiply(intensity, np.float32(255), out=intensity)
    counts += noise
    np.rint(counts, out=counts)
    return np.clip(counts, 0, 255, out=counts).astype(np.uint8)


#: JPEG's block size: regions to compress must start on multiples of it.
JPEG_BLOCK = 8


def jpeg(image: np.ndarray, x0: int, y0: int, scan: Scan) -> np.ndarray:
    """Compress and decompress an image whose origin (x0, y0) lies on the 8 px block grid."""
    if scan.jpeg_quality is None:
        return image
    if x0 % JPEG_BLOCK or y0 % JPEG_BLOCK:
        raise ValueError("JPEG regions must start on the 8 px block grid")
    data = imagecodecs.jpeg8_encode(
        np.ascontiguousarray(image), level=scan.jpeg_quality, subsampling="444"
    )
    return imagecodecs.jpeg8_decode(data)
