"""Shared helpers for the simulator tests: small slides and tissue-rich regions of them."""

import pytest

from vstain.synth import make_spec
from vstain.synth.dataset import tissue_tiles


def tissue_origin(spec, size: int, min_tissue: float = 0.95, margin: int = 128) -> tuple[int, int]:
    """Corner of a ``size``-aligned square of ``spec``, ``margin`` px inside, mostly tissue."""
    candidates = [
        (int(x), int(y))
        for x, y in tissue_tiles(spec, size, min_tissue)
        if min(x, y) >= margin and max(x - spec.width, y - spec.height) + size + margin <= 0
    ]
    assert candidates, "the test slide has no tissue-rich region"
    return candidates[len(candidates) // 2]


@pytest.fixture(scope="module")
def spec():
    """A 2048 px (1 mm) CK8/18 slide at 20x."""
    return make_spec(7, "ck818", 2048)
