"""A registration fitted to control points a user placed on both slides."""

from __future__ import annotations

import numpy as np
from skimage.transform import AffineTransform

from vstain.io.slide import Slide
from vstain.registration.errors import RegistrationError
from vstain.registration.registration import Registration, measure_quality

MIN_POINTS = 3


def fit_control_points(
    he_xy: np.ndarray, ihc_xy: np.ndarray, he: Slide, ihc: Slide
) -> Registration:
    """The affine map taking H&E level-0 points ``he_xy`` (N, 2) onto IHC level-0 ``ihc_xy``,
    with its hematoxylin quality measured like an automatic registration's."""
    he_xy, ihc_xy = np.asarray(he_xy, float), np.asarray(ihc_xy, float)
    if len(he_xy) != len(ihc_xy) or len(he_xy) < MIN_POINTS:
        raise RegistrationError(
            f"Place the same number of control points (at least {MIN_POINTS}) on both slides, in "
            f"the same order; got {len(he_xy)} on the H&E and {len(ihc_xy)} on the IHC."
        )
    fit = AffineTransform.from_estimate(he_xy, ihc_xy)
    if not fit or abs(np.linalg.det(fit.params[:2, :2])) < 1e-6:
        raise RegistrationError(
            "The control points do not define a map (they lie on one line?): spread them over "
            "the tissue."
        )
    reg = Registration(fit.params, he.pixel_size, ihc.pixel_size, 0.0, len(he_xy))
    reg.quality = measure_quality(reg, he, ihc)
    return reg
