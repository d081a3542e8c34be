"""The ``normalise`` option of a staining run: the slide's H&E mapped onto the stain statistics
of the model's training data (its card's ``stain_reference``), with the slide's statistics
estimated once per slide, on its tissue, never per tile."""

from __future__ import annotations

from vstain.color.stain_normalisation import METHODS, Normaliser, slide_stain_statistics
from vstain.errors import ModelError
from vstain.io import Slide
from vstain.tiles.job import slide_tissue_mask
from vstain.tiles.store import OutputStore

#: The run option that chooses the method; the engine takes it, not the model.
OPTION = "normalise"


def model_options(options: dict) -> dict:
    """The options that go to the model's ``predict`` (``normalise`` is the run's)."""
    return {k: v for k, v in options.items() if k != OPTION}


def check_method(card, options: dict) -> str:
    """The normalisation method ``options`` ask for, if the model's card has its reference."""
    method = options.get(OPTION, "none")
    if method not in METHODS:
        raise ModelError(f"normalise must be one of {', '.join(METHODS)}, got {method!r}.")
    if method != "none" and method not in card.stain_reference:
        known = ", ".join(card.stain_reference) or "none"
        raise ModelError(
            f"{card.architecture} has no {method} stain reference in its card (it has: {known}), "
            "so there is nothing to normalise to. Use normalise=none, or record the training "
            "H&E's statistics with vstain.models.set_stain_reference."
        )
    return method


def slide_normaliser(
    slide: Slide, level: int, card, method: str, store=None
) -> tuple[Normaliser, dict]:
    """The `Normaliser` of ``slide`` at ``level`` for ``card``'s reference, and the record of it
    for the store's settings. A resumed ``store`` keeps the slide statistics it was made with."""
    recorded = OutputStore.open(store).settings.get(OPTION) if store is not None else None
    if recorded is None:
        stats = slide_stain_statistics(slide, method, level=level, mask=slide_tissue_mask(slide))
        recorded = {"method": method, "slide": stats}
    return stored_normaliser(recorded, card), recorded


def stored_normaliser(recorded: dict | None, card) -> Normaliser | None:
    """The `Normaliser` a store's ``normalise`` record (None: no normalisation) stands for."""
    if recorded is None:
        return None
    method = recorded["method"]
    return Normaliser(method, recorded["slide"], card.stain_reference[method])
