"""How far a virtual IHC's DAB positivity is from the real one's: percent positive and H-score."""

from __future__ import annotations

import numpy as np

from vstain.color import dab_od, positivity
from vstain.metrics.image import rgb_pair


def positivity_error(
    virtual: np.ndarray, real: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, float]:
    """Pixel positivity of both images (QuPath thresholds on DAB OD) and the errors virtual - real.

    ``mask`` restricts scoring to a region (e.g. tissue). Keys: ``percent_positive_virtual``,
    ``percent_positive_real``, ``percent_positive_error`` and the same for ``h_score``.
    """
    virtual, real = rgb_pair(virtual, real)
    v, r = positivity(dab_od(virtual), mask=mask), positivity(dab_od(real), mask=mask)
    return {
        "percent_positive_virtual": v.percent_positive,
        "percent_positive_real": r.percent_positive,
        "percent_positive_error": v.percent_positive - r.percent_positive,
        "h_score_virtual": v.h_score,
        "h_score_real": r.h_score,
        "h_score_error": v.h_score - r.h_score,
    }
