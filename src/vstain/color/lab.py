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
    """``values @ matrix`` for (..., 3) values and a 3 x 3 matrix, computed channel by channel
    so that every pixel is rounded the same whatever the array's size (BLAS kernels may not)."""
    v = np.asarray(values, np.float32)
    m = np.asarray(matrix, np.float32)
    return v[..., 0:1] * m[0] + v[..., 1:2] * m[1] + v[..., 2:3] * m[2]


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) -> L*a*b* float32 (..., 3): L in [0, 100]."""
    xyz = mix_channels(LINEAR_LUT[np.asarray(rgb, np.uint8)], _TO_XYZ)
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), _KAPPA * xyz + _OFFSET)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], -1).astype(
        np.float32
    )


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """L*a*b* (..., 3) -> RGB uint8 (..., 3), rounded; out-of-gamut colours are clipped."""
    lab = np.asarray(lab, np.float32)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], -1)
    cube = f**3
    xyz = np.where(cube > _EPSILON, cube, (f - _OFFSET) / _KAPPA)
    linear = np.clip(mix_channels(xyz, _FROM_XYZ), 0.0, 1.0)
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(srgb * 255.0), 0, 255).astype(np.uint8)
