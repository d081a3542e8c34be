"""The true geometric relation between the H&E and the IHC of an adjacent-section pair.

The IHC pixel ``q`` shows the tissue at H&E pixel ``p = A^-1 (q + u(q))``: ``A`` is an affine map
(rotation about the slide centre, scale, shift) and ``u`` a smooth elastic displacement (pixels),
a function of IHC position. Going the other way, ``q = E^-1(A p)`` with ``E(q) = q + u(q)``,
solved by fixed-point iteration. Coordinates are (x, y) = (column, row) in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vstain.synth.hashing import stream_key
from vstain.synth.noise import GridSampler, PointSampler
from vstain.synth.spec import SlideSpec


@dataclass(frozen=True)
class SectionTransform:
    """Affine part ``affine`` (3 x 3, H&E pixels to IHC pixels) and an elastic displacement."""

    affine: np.ndarray
    elastic_px: float  # amplitude (standard deviation) of u in pixels
    elastic_spacing_um: float
    pixel_size: float
    key: int  # seeds the elastic field

    @classmethod
    def from_spec(cls, spec: SlideSpec) -> SectionTransform:
        s = spec.sectioning
        t = np.deg2rad(s.rotation_deg)
        rot = s.scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        centre = np.array([spec.width, spec.height]) / 2
        shift = np.asarray(s.shift_um) / spec.pixel_size
        affine = np.eye(3)
        affine[:2, :2] = rot
        affine[:2, 2] = centre + shift - rot @ centre
        return cls(
            affine,
            s.elastic_um / spec.pixel_size,
            s.elastic_scale_um,
            spec.pixel_size,
            stream_key(spec.seed, "elastic"),
        )

    def _field(self, at: GridSampler | PointSampler) -> tuple[np.ndarray, np.ndarray]:
        ux = at.noise("elastic-x", self.elastic_spacing_um, 2)
        uy = at.noise("elastic-y", self.elastic_spacing_um, 2)
        return self.elastic_px * ux.astype(np.float64), self.elastic_px * uy.astype(np.float64)

    def displacement(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Elastic displacement u (pixels) at IHC pixel positions."""
        ps = self.pixel_size
        return self._field(PointSampler(self.key, np.asarray(x) * ps, np.asarray(y) * ps))

    def displacement_grid(self, x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """u on the IHC pixel grid of a region, each (h, w)."""
        ps = self.pixel_size
        return self._field(
            GridSampler(self.key, (x0 + np.arange(w)) * ps, (y0 + np.arange(h)) * ps)
        )

    def _affine_inverse(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inv = np.linalg.inv(self.affine)
        return inv[0, 0] * x + inv[0, 1] * y + inv[0, 2], inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]

    def ihc_to_he(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """H&E pixel shown at IHC pixel (x, y)."""
        ux, uy = self.displacement(x, y)
        return self._affine_inverse(np.asarray(x) + ux, np.asarray(y) + uy)

    def ihc_grid_to_he(self, x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """H&E positions of the IHC pixel grid of a region, each (h, w)."""
        ux, uy = self.displacement_grid(x0, y0, w, h)
        return self._affine_inverse(
            (x0 + np.arange(w))[None, :] + ux, (y0 + np.arange(h))[:, None] + uy
        )

    def he_to_ihc(
        self, x: np.ndarray, y: np.ndarray, tol: float = 1e-4, max_iter: int = 100
    ) -> tuple[np.ndarray, np.ndarray]:
        """IHC pixel that shows H&E pixel (x, y); ``ihc_to_he`` inverted to ``tol`` pixels."""
        a = self.affine
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        tx = a[0, 0] * x + a[0, 1] * y + a[0, 2]
        ty = a[1, 0] * x + a[1, 1] * y + a[1, 2]
        qx, qy = tx.copy(), ty.copy()
        for _ in range(max_iter):
            ux, uy = self.displacement(qx, qy)
            nx, ny = tx - ux, ty - uy
            step = np.max(np.hypot(nx - qx, ny - qy), initial=0.0)
            qx, qy = nx, ny
            if step < tol:
                return qx, qy
        raise ArithmeticError("elastic displacement too strong to invert")
