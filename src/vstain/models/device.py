"""Compute devices: choosing one, mixed precision, and batched inference for the tile engine."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import Tensor

from vstain.errors import DeviceError, ModelError
from vstain.models.base import StainModel


def available_devices() -> list[str]:
    """Devices usable here, in the order "auto" prefers them."""
    devices = []
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return [*devices, "cpu"]


def choose_device(name: str = "auto") -> torch.device:
    """``"auto"`` (cuda, then mps, then cpu), ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"cpu"``."""
    available = available_devices()
    if name == "auto":
        first = available[0]
        return torch.device("cuda" if first.startswith("cuda") else first)
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"Unknown device {name!r}. Use auto, cuda, cuda:N, mps or cpu.") from e
    if device.type not in ("cuda", "mps", "cpu"):
        raise DeviceError(f"Unsupported device {name!r}. Use auto, cuda, cuda:N, mps or cpu.")
    wanted = f"cuda:{device.index or 0}" if device.type == "cuda" else device.type
    if wanted not in available:
        raise DeviceError(
            f"Device {name!r} is not available on this machine. Available: {', '.join(available)}."
        )
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype: bf16 on CUDA when supported, else fp16; None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast on CUDA (see :func:`autocast_dtype`); a no-op context on CPU and MPS."""
    dtype = autocast_dtype(device)
    return torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()


def prepare_model(model: StainModel, device: torch.device) -> StainModel:
    """Move ``model`` to ``device`` for inference (eval mode; channels-last memory on CUDA)."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model.eval()


def _as_batch_tensor(batch: np.ndarray | Tensor) -> Tensor:
    """B x 3 x H x W tensor view of a numpy (B x H x W x 3 or B x 3 x H x W) or tensor batch."""
    if isinstance(batch, np.ndarray):
        last = batch.ndim == 4 and batch.shape[-1] == 3
        first = batch.ndim == 4 and batch.shape[1] == 3
        if last == first:  # neither layout, or both (a 3-px side) and no way to tell
            raise ModelError(
                f"numpy batches must be B x H x W x 3 or B x 3 x H x W (RGB, sides other than "
                f"3 px), got {batch.shape}."
            )
        if batch.dtype != np.uint8 and not np.issubdtype(batch.dtype, np.floating):
            raise ModelError(f"numpy batches must be uint8 or float in [0, 1], got {batch.dtype}.")
        if batch.dtype != np.uint8 and batch.size and (batch.min() < 0 or batch.max() > 1):
            raise ModelError(
                f"float batches must be in [0, 1], got values in "
                f"[{batch.min():.3g}, {batch.max():.3g}]; divide 8-bit data by 255."
            )
        tensor = torch.from_numpy(batch)
        return tensor.permute(0, 3, 1, 2) if last else tensor
    if not isinstance(batch, Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
        shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
        raise ModelError(f"tensor batches must be B x 3 x H x W, got {shape}.")
    return batch


def predict_batch(
    model: StainModel, batch: np.ndarray | Tensor, device: torch.device, **options
) -> dict[str, np.ndarray]:
    """Run ``model`` (already on ``device``) on one batch; outputs as numpy B x C x H x W (float32,
    or the integer type of label outputs).

    ``options`` go to ``model.predict`` (e.g. sampler steps of a diffusion model).

    ``batch`` is numpy B x H x W x 3 (slide pixels) or B x 3 x H x W (the tile engine's batches),
    or a tensor B x 3 x H x W; uint8, or float in [0, 1]. On CUDA the batch goes through pinned
    memory with a non-blocking copy (as uint8 when it is uint8) and runs channels-last under
    autocast.
    """
    model_device = next(model.parameters()).device
    if model_device.type != device.type or (
        device.index is not None and model_device.index != device.index
    ):
        raise ModelError(
            f"The model is on {model_device} but {device} was asked; call "
            "vstain.models.device.prepare_model(model, device) first."
        )
    x = _as_batch_tensor(batch)
    if device.type == "cuda":
        if x.device.type == "cpu":
            x = x.pin_memory()
        x = x.to(device, non_blocking=True)
    else:
        x = x.to(device)
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    x = x.contiguous(memory_format=memory_format)
    with autocast_context(device):
        prediction = model.predict(x, **options)
    return {name: _to_numpy(value) for name, value in prediction.outputs().items()}


def _to_numpy(value: Tensor) -> np.ndarray:
    """Float outputs as float32 (autocast may give half), integer ones (labels) unchanged."""
    return (value.float() if value.is_floating_point() else value).cpu().numpy()
