"""A model loaded once for staining: the model on its device, its checksum and its tile function;
and the one cache of such models that the napari widgets share."""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from vstain.errors import CheckpointError
from vstain.models import StainModel, choose_device, load_checkpoint, prepare_model, sha256_file
from vstain.models.device import Predictor
from vstain.pipeline.normalise import model_options
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

    def tile_function(self, options: dict | None = None, normaliser=None) -> Predictor:
        """The tile engine's batch function: a `Predictor` (uint8 windows in, on the device,
        non-finite outputs refused) with the model's ``options``, point outputs rasterised, and
        the slide's H&E first mapped by ``normaliser`` (a `vstain.color.Normaliser`) if given."""
        return Predictor(
            self.model,
            self.device,
            options=model_options(options or {}),
            preprocess=normaliser,
            postprocess=rasterised,
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
