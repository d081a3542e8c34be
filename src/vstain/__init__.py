"""vstain: virtual immunohistochemistry from H&E slides."""

from vstain.errors import VstainError

__version__ = "0.1.0"
__all__ = ["VstainError", "__version__"]
