"""Registration of an adjacent-section IHC slide to its H&E."""

from vstain.register.registration import (
    QUALITY_OK,
    Registration,
    RegistrationError,
    register,
)

__all__ = ["QUALITY_OK", "Registration", "RegistrationError", "register"]
