"""CIELAB (D65, sRGB) for uint8 images, in float32 and without warnings.

The same formulas as scikit-image's ``rgb2lab`` / ``lab2rgb``, written for tiles: float32, a
lookup table for the sRGB decoding of uint8, and out-of-gamut colours clipped silently (skimage
warns on every such tile, and silencing warnings is not thread-safe in the tile engine).
"""

from __future__ import annotations

import numpy as np

#: Linear sRGB -> CIE XYZ (D65), as in scikit-image and IEC 61966-2-1.
XYZ_FROM_RGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB)
#: D65 reference white (2 degree observer).
WHITE = np.array([0.95047, 1.0, 1.08883])
_EPSILON = 0.008856
_KAPPA = 7.787
_OFFSET = 16.0 / 116.0


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


#: sRGB-decoded value of every uint8 level.
LINEAR_LUT = _srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)
_TO_XYZ = (XYZ_FROM_RGB / WHITE[:, None]).T.astype(np.float32)  # row vectors, white-normalised
_FROM_XYZ = (RGB_FROM_XYZ * WHITE[None, :]).T.astype(np.float32)


def mix_channels(values: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``values @ matrix`` for (..., 3) values and a 3 x 3 matrix (float32)."""
    return np.stack(_mix(_planes(values), matrix), axis=-1)


def _planes(values: np.ndarray) -> list[np.ndarray]:
    """The three channels of (..., 3) values as contiguous float32 arrays."""
    return [np.ascontiguousarray(values[..., c], dtype=np.float32) for c in range(3)]


def _mix(planes: list[np.ndarray], matrix: np.ndarray) -> list[np.ndarray]:
    """Channel planes times a 3 x 3 matrix, one scalar multiply-add at a time, so that every
    pixel is rounded the same whatever the array's size (BLAS kernels may not be)."""
    m = np.asarray(matrix, np.float32)
    return [planes[0] * m[0, k] + planes[1] * m[1, k] + planes[2] * m[2, k] for k in range(3)]


def _f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _EPSILON, np.cbrt(t), _KAPPA * t + _OFFSET)


def _f_inverse(f: np.ndarray) -> np.ndarray:
    cube = f**3
    return np.where(cube > _EPSILON, cube, (f - _OFFSET) / _KAPPA)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) -> L*a*b* float32 (..., 3): L in [0, 100]."""
    rgb = np.asarray(rgb, np.uint8)
    linear = [LINEAR_LUT[rgb[..., c]] for c in range(3)]
    fx, fy, fz = (_f(t) for t in _mix(linear, _TO_XYZ))
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], -1).astype(
        np.float32
    )


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """L*a*b* (..., 3) -> RGB uint8 (..., 3), rounded; out-of-gamut colours are clipped."""
    lightness, a, b = _planes(lab)
    fy = (lightness + 16.0) / 116.0
    xyz = [_f_inverse(fy + a / 500.0), _f_inverse(fy), _f_inverse(fy - b / 200.0)]
    out = []
    for linear in _mix(xyz, _FROM_XYZ):
        np.clip(linear, 0.0, 1.0, out=linear)
        srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
        out.append(np.clip(np.rint(srgb * 255.0), 0, 255).astype(np.uint8))
    return np.stack(out, axis=-1)
