"""Compute devices: choosing one, mixed precision, and batched inference for the tile engine."""

from __future__ import annotations

import contextlib
import inspect

import numpy as np
import torch
from torch import Tensor

from vstain.errors import DeviceError, ModelError, StainError
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


#: Autocast modes: "auto" (bf16 on CUDA where supported, else fp16; off on CPU and MPS), "bf16",
#: "fp16", "off".
AUTOCAST_MODES = ("auto", "bf16", "fp16", "off")
#: Share of the free device memory the automatic batch size may fill.
MEMORY_FRACTION = 0.6
MAX_AUTO_BATCH = 64


def autocast_dtype(device: torch.device, mode: str = "auto") -> torch.dtype | None:
    """Mixed-precision dtype for ``mode`` (see `AUTOCAST_MODES`); None when off."""
    if mode not in AUTOCAST_MODES:
        raise ModelError(f"autocast must be one of {', '.join(AUTOCAST_MODES)}, got {mode!r}.")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def autocast_context(device: torch.device, mode: str = "auto") -> contextlib.AbstractContextManager:
    """Autocast for ``mode`` (see :func:`autocast_dtype`); a no-op context when off."""
    dtype = autocast_dtype(device, mode)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def prepare_model(
    model: StainModel, device: torch.device, channels_last: bool | None = None
) -> StainModel:
    """Move ``model`` to ``device`` for inference (eval mode; channels-last memory when
    ``channels_last``, by default on CUDA)."""
    model.to(device)
    if device.type == "cuda" if channels_last is None else channels_last:
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


def _check_device(model: StainModel, device: torch.device) -> None:
    model_device = next(model.parameters()).device
    if model_device.type != device.type or (
        device.index is not None and model_device.index != device.index
    ):
        raise ModelError(
            f"The model is on {model_device} but {device} was asked; call "
            "vstain.models.device.prepare_model(model, device) first."
        )


def to_uint8(ihc: Tensor) -> Tensor:
    """IHC in [0, 1] -> uint8 0-255, rounded half to even like the store's float path."""
    return (ihc.float() * 255).round_().clamp_(0, 255).to(torch.uint8)


#: Key of the non-finite flags travelling with a batch's outputs (never a model output).
NONFINITE = "_nonfinite"


class Predictor:
    """The tile engine's batch function for a model on its device.

    Slide windows travel as uint8 (``uint8_input``: the engine hands over (B, H, W, 3) windows
    as read) and become float in [0, 1] on the device; with ``uint8_output`` the IHC comes back
    as uint8 0-255, rounded on the device, a quarter of the float bytes. On CUDA a batch goes
    through pinned memory with a non-blocking copy on its own stream, the forward pass runs on
    the current stream and the results come back on a third, so that with `submit` (the
    engine sends batch k + 1 before collecting batch k) copies overlap compute.

    ``autocast`` is one of `AUTOCAST_MODES`; ``channels_last`` (default: on CUDA) lays inputs
    and weights out channels-last. `settings` records both for the run's store.
    ``preprocess`` is applied to each numpy batch before it leaves the host (e.g. stain
    normalisation of uint8 windows), ``postprocess`` to each batch's outputs (e.g. rasterising
    keypoints). NaN or infinite outputs raise `StainError` when the batch is collected, so that
    nothing of it is written.
    """

    uint8_input = True

    def __init__(
        self,
        model: StainModel,
        device: torch.device,
        *,
        options: dict | None = None,
        autocast: str = "auto",
        channels_last: bool | None = None,
        uint8_output: bool = True,
        preprocess=None,
        postprocess=None,
    ):
        _check_device(model, device)
        self.model, self.device, self.options = model, device, dict(options or {})
        self.autocast = autocast
        self.dtype = autocast_dtype(device, autocast)
        self.channels_last = device.type == "cuda" if channels_last is None else channels_last
        if channels_last is not None:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            model.to(memory_format=fmt)
        self.uint8_output = uint8_output
        self.preprocess, self.postprocess = preprocess, postprocess
        infer = getattr(model, "infer", None)  # evaluation also runs objects with predict only
        self.positioned = infer is not None and "origin" in inspect.signature(infer).parameters
        cuda = device.type == "cuda"
        #: The engine sends the next batch before collecting this one only where submitting does
        #: not compute (CUDA's streams); on a CPU each tile would wait for the next one's pass.
        self.runs_ahead = cuda
        self._upload = torch.cuda.Stream(device) if cuda else None
        self._download = torch.cuda.Stream(device) if cuda else None

    @property
    def settings(self) -> dict:
        """What a run's store records: outputs depend on precision."""
        dtype = None if self.dtype is None else str(self.dtype).removeprefix("torch.")
        return {"autocast": dtype or "off", "channels_last": self.channels_last}

    def __call__(self, batch, origins=None) -> dict[str, np.ndarray]:
        return self.submit(batch, origins)()

    def submit(self, batch, origins=None):
        """Start ``batch`` on the device; returns a function that waits for and gives its
        outputs as numpy B x C x H x W."""
        if self.preprocess is not None and isinstance(batch, np.ndarray):
            batch = self.preprocess(batch)
        x = self._upload_batch(_as_batch_tensor(batch))
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = x.contiguous(memory_format=fmt)
        options = dict(self.options)
        if origins is not None and self.positioned:
            options["origin"] = origins
        with autocast_context(self.device, self.autocast):
            outputs = self.model.predict(x, **options).outputs()
        floats = [v for v in outputs.values() if v.is_floating_point()]
        nonfinite = torch.stack([(~torch.isfinite(v)).any() for v in floats]) if floats else None
        if self.uint8_output and "ihc" in outputs:
            outputs["ihc"] = to_uint8(outputs["ihc"])
        outputs = {k: v.float() if v.is_floating_point() else v for k, v in outputs.items()}
        if nonfinite is not None:
            outputs[NONFINITE] = nonfinite  # checked on the host without a device sync here
        return self._download_outputs(outputs)

    def _upload_batch(self, x: Tensor) -> Tensor:
        if self._upload is None or x.device.type != "cpu":
            return x.to(self.device)
        with torch.cuda.stream(self._upload):
            on_device = x.pin_memory().to(self.device, non_blocking=True)
        torch.cuda.current_stream(self.device).wait_stream(self._upload)
        on_device.record_stream(torch.cuda.current_stream(self.device))
        return on_device

    def _download_outputs(self, outputs: dict[str, Tensor]):
        if self._download is None:
            arrays = {k: v.cpu().numpy() for k, v in outputs.items()}
        else:
            self._download.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._download):
                host = {k: v.to("cpu", non_blocking=True) for k, v in outputs.items()}
                for v in outputs.values():
                    v.record_stream(self._download)
                done = torch.cuda.Event()
                done.record()

        def collect() -> dict[str, np.ndarray]:
            if self._download is None:
                result = arrays
            else:
                done.synchronize()
                result = {k: v.numpy() for k, v in host.items()}
            if result.pop(NONFINITE, np.zeros(1, bool)).any():
                name = getattr(getattr(self.model, "card", None), "architecture", "The model")
                raise StainError(
                    f"{name} produced NaN or infinite values; nothing of "
                    "that batch was written. The checkpoint is probably broken (a diverged "
                    "training run): use an earlier checkpoint, then rerun with --resume."
                )
            return self.postprocess(result) if self.postprocess else result

        return collect


def batch_for_memory(free_bytes: int, bytes_per_tile: int, limit: int = MAX_AUTO_BATCH) -> int:
    """Largest batch whose tiles fit `MEMORY_FRACTION` of ``free_bytes`` (1 to ``limit``)."""
    return int(min(max(MEMORY_FRACTION * free_bytes // max(bytes_per_tile, 1), 1), limit))


def auto_batch_size(predictor: Predictor, window: int, default: int = 4) -> int:
    """Batch size from the device's free memory: one probe tile of ``window`` px measures the
    peak memory a tile needs (CUDA); ``default`` on devices that do not report memory."""
    if predictor.device.type != "cuda":
        return default
    torch.cuda.synchronize(predictor.device)
    torch.cuda.reset_peak_memory_stats(predictor.device)
    before = torch.cuda.memory_allocated(predictor.device)
    predictor(np.zeros((1, window, window, 3), np.uint8), origins=[(0, 0)])
    per_tile = torch.cuda.max_memory_allocated(predictor.device) - before
    free, _ = torch.cuda.mem_get_info(predictor.device)
    return batch_for_memory(free, per_tile)


def predict_batch(
    model: StainModel, batch: np.ndarray | Tensor, device: torch.device, **options
) -> dict[str, np.ndarray]:
    """Run ``model`` (already on ``device``) on one batch; outputs as numpy B x C x H x W (float32,
    or the integer type of label outputs).

    ``options`` go to ``model.predict`` (e.g. sampler steps of a diffusion model).

    ``batch`` is numpy B x H x W x 3 (slide pixels) or B x 3 x H x W (the tile engine's batches),
    or a tensor B x 3 x H x W; uint8, or float in [0, 1]. On CUDA the batch goes through pinned
    memory with a non-blocking copy (as uint8 when it is uint8) and runs channels-last under
    autocast (see `Predictor`, which this is with float outputs).
    """
    return Predictor(model, device, options=options, uint8_output=False)(batch)
