"""Virtual-staining models: interface, registry, checkpoints, devices and the registered models.

Each model lives in its own module and registers itself on import; import it here so that
:func:`list_models` knows it.
"""

from vstain import triton_guard  # noqa: F401  (first: applies the guard at import)
from vstain.errors import CheckpointError, DeviceError, ModelError
from vstain.models import (
    asp_dgrank,  # noqa: F401  (registers asp-dgrank)
    implicit_stainer,  # noqa: F401  (registers implicit-stainer)
    k_stain,  # noqa: F401  (registers k-stain)
    pix2pix,  # noqa: F401  (registers pix2pix and pyramid-pix2pix)
    stain_diffuser,  # noqa: F401  (registers stain-diffuser and its two variants)
    unet_pix2pix,  # noqa: F401  (registers pix2pix-unet and pyramid-pix2pix-unet)
)
from vstain.models.base import ModelCard, Prediction, StainModel, TrainState
from vstain.models.checkpoint import (
    load_checkpoint,
    read_card,
    save_checkpoint,
    set_stain_reference,
    sha256_file,
)
from vstain.models.device import (
    autocast_context,
    choose_device,
    predict_batch,
    prepare_model,
)
from vstain.models.importers import import_generator
from vstain.models.registry import (
    create,
    list_models,
    model_configs,
    predict_options,
    register,
)
from vstain.models.train_state import SimpleTrainState

__all__ = [
    "CheckpointError",
    "DeviceError",
    "ModelCard",
    "ModelError",
    "Prediction",
    "SimpleTrainState",
    "StainModel",
    "TrainState",
    "autocast_context",
    "choose_device",
    "create",
    "import_generator",
    "list_models",
    "load_checkpoint",
    "model_configs",
    "predict_batch",
    "predict_options",
    "prepare_model",
    "read_card",
    "register",
    "save_checkpoint",
    "set_stain_reference",
    "sha256_file",
]
