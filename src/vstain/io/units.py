"""Length units found in slide metadata, converted to micrometres."""

from __future__ import annotations

#: Micrometres per unit, keyed by the spellings OME-XML, OME-NGFF and TIFF writers use.
MICROMETRES_PER_UNIT: dict[str, float] = {
    "µm": 1.0,  # micro sign
    "μm": 1.0,  # Greek small letter mu
    "um": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "micron": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "Å": 1e-4,
    "angstrom": 1e-4,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
    "in": 25400.0,
    "inch": 25400.0,
}


def to_micrometres(value: float, unit: str) -> float | None:
    """``value`` in ``unit`` as micrometres, or None when the unit is not a known length unit."""
    unit = unit.strip()
    factor = MICROMETRES_PER_UNIT.get(unit, MICROMETRES_PER_UNIT.get(unit.lower()))
    return None if factor is None else float(value) * factor
