"""Errors a user can hit. Each message says what went wrong and what to do."""


class VstainError(Exception):
    """Base class of every error vstain reports to a user."""


class SlideError(VstainError):
    """A slide cannot be read or written (missing, corrupt, unsupported pixels)."""


class RegionError(VstainError):
    """A requested region does not lie on the slide."""


class OutputExistsError(VstainError):
    """An output exists and neither resume nor overwrite was asked for."""


class CancelledError(VstainError):
    """Work was cancelled through a cancel token."""


class StainError(VstainError):
    """An image cannot be unmixed, measured or scored (wrong shape, no tissue, one stain)."""


class DatasetError(VstainError):
    """A paired dataset folder is missing, empty, or holds unpaired or mismatched images."""


class ModelError(VstainError):
    """A model cannot be created or used as asked (unknown name, config, option or input)."""


class CheckpointError(ModelError):
    """A checkpoint file cannot be read, or does not fit the model its card describes."""


class DeviceError(ModelError):
    """The requested compute device is not available on this machine."""


class SynthError(VstainError):
    """A simulated slide or dataset was asked for with parameters it cannot have."""
