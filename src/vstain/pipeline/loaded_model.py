"""A model loaded once for staining: the model on its device, its checksum and its tile function;
and the one cache of such models that the napari widgets share."""

from __future__ import annotations

import gc
import inspect
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vstain.errors import CheckpointError, StainError
from vstain.models import StainModel, choose_device, load_checkpoint, prepare_model, sha256_file
from vstain.models.device import predict_batch
from vstain.pipeline.outputs import rasterised
from vstain.weights import resolve_checkpoint


@dataclass(frozen=True)
class LoadedModel:
    """``model`` on ``device`` for inference; ``checkpoint`` and ``sha256`` when it came from a
    file (None for a model built in memory)."""

    model: StainModel
    device: torch.device
    checkpoint: Path | None = None
    sha256: str | None = None

    @property
    def card(self):
        return self.model.card

    @property
    def takes_origin(self) -> bool:
        """Whether the model's noise is seeded by tile position (its tile function takes the
        windows' origins)."""
        return "origin" in inspect.signature(self.model.infer).parameters

    def tile_function(self, options: dict | None = None):
        """The tile engine's batch function: predictions with ``options``, point outputs
        rasterised, non-finite outputs refused; models that take an ``origin`` (position-seeded
        noise) get each window's position."""
        options = dict(options or {})
        model, device = self.model, self.device

        def run(batch, **extra):
            outputs = rasterised(predict_batch(model, batch, device, **extra, **options))
            check_finite(outputs, model.card.architecture)
            return outputs

        if not self.takes_origin:
            return run
        return lambda batch, origins: run(batch, origin=origins)


def check_finite(outputs: dict[str, np.ndarray], architecture: str) -> None:
    """Refuse NaN or infinite model outputs before anything is written or marked done."""
    for name, values in outputs.items():
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise StainError(
                f"{architecture} produced NaN or infinite {name} values; nothing of that batch "
                "was written. The checkpoint is probably broken (a diverged training run): "
                "use an earlier checkpoint, then rerun with --resume."
            )


def load_model(model, device: str = "auto") -> LoadedModel:
    """A `LoadedModel` from a `LoadedModel`, a `StainModel`, a checkpoint path or a shipped name."""
    if isinstance(model, LoadedModel):
        return model
    dev = choose_device(device)
    if isinstance(model, StainModel):
        return LoadedModel(prepare_model(model, dev), dev)
    path = resolve_checkpoint(str(model))
    return LoadedModel(
        prepare_model(load_checkpoint(path, device=dev), dev), dev, path, sha256_file(path)
    )


class ModelCache:
    """Holds the one model in use, loaded once; asking for another frees the previous one.

    Thread-safe: a staining thread asks for the model, a widget may clear it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._key: tuple[Path, int, str] | None = None
        self._loaded: LoadedModel | None = None

    def get(self, checkpoint: Path, device: str) -> LoadedModel:
        """The model of ``checkpoint`` on ``device`` (reloaded when the file changed)."""
        path = Path(checkpoint).resolve()
        if not path.is_file():
            raise CheckpointError(f"Checkpoint {path} does not exist. Load another checkpoint.")
        key = (path, path.stat().st_mtime_ns, device)
        with self._lock:
            if self._key != key:
                self._free()
                self._loaded = load_model(path, device)
                self._key = key
            return self._loaded

    def clear(self) -> None:
        """Free the cached model (and its GPU memory)."""
        with self._lock:
            self._free()

    def _free(self) -> None:
        if self._loaded is None:
            return
        device = self._loaded.device
        self._loaded, self._key = None, None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        elif device.type == "mps":
            torch.mps.empty_cache()
