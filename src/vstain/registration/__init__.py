"""Registration of an adjacent-section IHC slide to its H&E: affine, local field, control points."""

from vstain.registration.field import DisplacementField
from vstain.registration.reader import registered_reader
from vstain.registration.registration import (
    AGREEMENT_OK,
    QUALITY_OK,
    Registration,
    RegistrationError,
    register,
)

__all__ = [
    "AGREEMENT_OK",
    "QUALITY_OK",
    "DisplacementField",
    "Registration",
    "RegistrationError",
    "register",
    "registered_reader",
]
