"""The error registration raises."""

from vstain.errors import VstainError


class RegistrationError(VstainError):
    """Two slides cannot be registered (no pixel size ratio, no common features)."""
