"""Length units of slide metadata in micrometres."""

import pytest

from vstain.io.units import to_micrometres


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (0.25, "µm", 0.25),
        (0.25, "μm", 0.25),
        (0.25, "micrometer", 0.25),
        (250, "nm", 0.25),
        (2500, "Å", 0.25),
        (0.00025, "mm", 0.25),
        (2.5e-5, "cm", 0.25),
        (2.5e-7, "meter", 0.25),
        (0.25, " Micrometer ", 0.25),
        (1e-5, "inch", 0.254),
    ],
)
def test_known_units(value, unit, expected):
    assert to_micrometres(value, unit) == pytest.approx(expected)


@pytest.mark.parametrize("unit", ["pixel", "", "second"])
def test_unknown_units_give_none(unit):
    assert to_micrometres(1.0, unit) is None
