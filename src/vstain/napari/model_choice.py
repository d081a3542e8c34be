"""What the widget says about a checkpoint, and the one model it keeps loaded."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import torch

from vstain.errors import CheckpointError
from vstain.models import ModelCard, StainModel, choose_device, load_checkpoint, sha256_file

UNTRAINED = "Untrained: random weights (0 training steps); the virtual stain means nothing."
SIMULATED = (
    "Demo weights trained on simulated tissue: shows how vstain works, not for diagnostic use."
)


def card_summary(card: ModelCard) -> str:
    """Lines describing a model card: architecture, markers, pixel size, tile, steps, notes."""
    pixel = f"{card.pixel_size:g} µm/px" if card.pixel_size else "unknown (full resolution used)"
    lines = [
        f"Architecture: {card.architecture}",
        f"Marker: {', '.join(card.markers) or 'not stated'}",
        f"Pixel size: {pixel}",
        f"Tile: {card.tile_size} px (+{card.halo} px context each side)",
        f"Training steps: {card.steps}",
    ]
    if card.training_data:
        lines.append(f"Trained on: {card.training_data}")
    if card.notes:
        lines.append(f"Notes: {card.notes}")
    return "\n".join(lines)


IMPORTED = (
    "Imported public weights, trained elsewhere: check the marker and pixel size, and compare "
    "with real IHC before trusting them."
)


def card_warning(card: ModelCard) -> str | None:
    """A warning to show next to the card: imported, untrained or demo (simulated) weights."""
    if card.provenance.get("kind") == "import":
        return IMPORTED
    if card.steps == 0:
        return UNTRAINED
    if "simulated tissue" in card.notes.lower():
        return SIMULATED
    return None


def layer_prefix(model_name: str, card: ModelCard) -> str:
    """``<model> <marker>``, the start of every output layer's name; a marker the model's name
    already ends with (``stain-diffuser-cd3``) is not repeated."""
    markers = [m for m in card.markers if not model_name.endswith(f"-{m}")]
    return " ".join([model_name, *markers])


class ModelCache:
    """Holds the one model in use, loaded once; asking for another frees the previous one.

    Thread-safe: the staining thread asks for the model, the widget may clear it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._key: tuple[Path, int, str] | None = None
        self._model: StainModel | None = None
        self._sha256: str | None = None

    def get(self, checkpoint: Path, device: str) -> tuple[StainModel, str]:
        """The model of ``checkpoint`` on ``device``, and the checkpoint's SHA-256 (reloaded when
        the file changed)."""
        path = Path(checkpoint).resolve()
        if not path.is_file():
            raise CheckpointError(f"Checkpoint {path} does not exist. Load another checkpoint.")
        key = (path, path.stat().st_mtime_ns, device)
        with self._lock:
            if self._key != key:
                self._free()
                self._model = load_checkpoint(key[0], device=choose_device(device))
                self._sha256 = sha256_file(key[0])
                self._key = key
            return self._model, self._sha256

    def clear(self) -> None:
        """Free the cached model (and its GPU memory)."""
        with self._lock:
            self._free()

    def _free(self) -> None:
        if self._model is None:
            return
        device = next(self._model.parameters()).device
        self._model, self._key, self._sha256 = None, None, None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        elif device.type == "mps":
            torch.mps.empty_cache()
