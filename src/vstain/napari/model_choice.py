"""What the widget says about a checkpoint: its card in lines, warnings and layer names."""

from __future__ import annotations

from vstain.models import ModelCard

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
