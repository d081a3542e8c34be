"""The model interface: the card, the prediction, the model base class and the trainer protocol.

A model is created through :mod:`vstain.models.registry`, which fills the card's derived fields
(``halo``, ``outputs``, ``normalisation``). Training batches are dicts with ``"he"`` and ``"ihc"``,
float tensors B x 3 x H x W in [0, 1], already on the model's device.
"""

from __future__ import annotations

import datetime
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from vstain.color.stain_normalisation import ESTIMATORS, statistics_problems
from vstain.errors import ModelError
from vstain.io.limits import finite_number, loads_bounded

OUTPUT_KINDS = ("ihc", "segmentation", "keypoints", "uncertainty", "attention")
#: Largest tile size and halo a card may state, px (a 4096 px tile is 200 MB of float input).
MAX_TILE_SIZE = 4096
NORMALISATIONS = ("[0,1]", "[-1,1]")


def _today() -> str:
    return datetime.date.today().isoformat()


@dataclass
class ModelCard:
    """What a model is, what it needs and where it came from; stored as JSON in checkpoints.

    ``halo`` is the context (px, each side) a tile needs so that the centre crop of the tiled output
    equals the whole-image output; ``pixel_size`` is in micrometres per pixel (None: unknown).
    """

    architecture: str
    config: dict = field(default_factory=dict)
    markers: list[str] = field(default_factory=list)
    pixel_size: float | None = None
    tile_size: int = 512
    halo: int = 0
    outputs: list[str] = field(default_factory=lambda: ["ihc"])
    normalisation: str = "[0,1]"
    training_data: str = ""
    steps: int = 0
    metrics: dict = field(default_factory=dict)
    parent: str | None = None
    parent_sha256: str | None = None
    created: str = field(default_factory=_today)
    perceptual_backbone: str | None = None
    notes: str = ""
    #: How the weights were derived from the parent (fine-tune regions and settings, import source).
    provenance: dict = field(default_factory=dict)
    #: Stain statistics of the training H&E, keyed by normalisation method (``macenko``,
    #: ``reinhard``): the reference a slide is normalised to (`vstain.color.stain_normalisation`).
    stain_reference: dict = field(default_factory=dict)

    def __post_init__(self):
        problems = _card_problems(self)
        if problems:
            raise ModelError("Invalid model card: " + "; ".join(problems) + ".")

    def to_json(self) -> str:
        """The card as a JSON object (keys sorted)."""
        try:
            return json.dumps(asdict(self), sort_keys=True)
        except TypeError as e:
            raise ModelError(
                f"Model card of {self.architecture!r} is not JSON-serialisable: {e}. "
                "Use only numbers, strings, lists and dicts in config and metrics."
            ) from e

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Parse a card written by :meth:`to_json`; unknown or missing fields raise ModelError."""
        try:
            data = loads_bounded(text)
        except ValueError as e:
            raise ModelError(f"Model card is not valid JSON ({e}).") from e
        if not isinstance(data, dict):
            raise ModelError(f"Model card must be a JSON object, got {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(
                f"Model card has unknown fields {unknown}; it may come from a newer "
                "vstain. Upgrade vstain to read it."
            )
        if "architecture" not in data:
            raise ModelError("Model card has no 'architecture'; it cannot be rebuilt.")
        return cls(**data)


def _card_problems(card: ModelCard) -> list[str]:
    """Human-readable reasons why ``card`` is invalid (empty when it is valid)."""
    problems = []
    if not isinstance(card.architecture, str) or not card.architecture:
        problems.append("architecture must be a non-empty string")
    if not all(isinstance(d, dict) for d in (card.config, card.metrics, card.provenance)):
        problems.append("config, metrics and provenance must be dicts")
    if not isinstance(card.markers, list) or not all(isinstance(m, str) for m in card.markers):
        problems.append(f"markers must be a list of strings, got {card.markers!r}")
    if card.pixel_size is not None and not (finite_number(card.pixel_size) and card.pixel_size > 0):
        problems.append(f"pixel_size must be a positive number or None, got {card.pixel_size!r}")
    for name, low, high in (("tile_size", 1, MAX_TILE_SIZE), ("halo", 0, MAX_TILE_SIZE)):
        value = getattr(card, name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append(f"{name} must be an integer from {low} to {high}, got {value!r}")
    if not isinstance(card.steps, int) or isinstance(card.steps, bool) or card.steps < 0:
        problems.append(f"steps must be an integer >= 0, got {card.steps!r}")
    if (
        not isinstance(card.outputs, list)
        or "ihc" not in card.outputs
        or not set(card.outputs) <= set(OUTPUT_KINDS)
    ):
        problems.append(
            f"outputs must include 'ihc' and only {list(OUTPUT_KINDS)}, got {card.outputs!r}"
        )
    if card.normalisation not in NORMALISATIONS:
        problems.append(
            f"normalisation must be one of {list(NORMALISATIONS)}, got {card.normalisation!r}"
        )
    problems += _stain_reference_problems(card.stain_reference)
    return problems


def _stain_reference_problems(reference: object) -> list[str]:
    if not isinstance(reference, dict):
        return [f"stain_reference must be a dict keyed by method, got {type(reference).__name__}"]
    unknown = sorted(set(reference) - set(ESTIMATORS))
    if unknown:
        return [f"stain_reference keys must be among {list(ESTIMATORS)}, got {unknown}"]
    return [p for method, stats in reference.items() for p in statistics_problems(stats, method)]


@dataclass
class Prediction:
    """A model's outputs for a batch; ``ihc`` is B x 3 x H x W in [0, 1], the rest optional."""

    ihc: Tensor
    segmentation: Tensor | None = None
    keypoints: Tensor | None = None
    uncertainty: Tensor | None = None
    attention: Tensor | None = None

    def outputs(self) -> dict[str, Tensor]:
        """The outputs that are present, by name."""
        present = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in present.items() if value is not None}


def to_model_range(x: Tensor, normalisation: str) -> Tensor:
    """Map images in [0, 1] to a model's input range."""
    return x * 2 - 1 if normalisation == "[-1,1]" else x


def from_model_range(y: Tensor, normalisation: str) -> Tensor:
    """Map images in a model's output range back to [0, 1] (clamped)."""
    return ((y + 1) / 2 if normalisation == "[-1,1]" else y).clamp(0, 1)


@runtime_checkable
class TrainState(Protocol):
    """What a model's ``training_step`` may use from the trainer.

    ``backward_step(name, loss)`` backpropagates ``loss`` and steps optimiser ``name`` (AMP grad
    scaling, gradient clipping, learning-rate schedule, zeroing are the state's job); models call it
    once per optimiser per step, in the order they want the updates. ``progress`` is the fraction of
    training done, 0..1; ``step`` the number of steps done before this one.
    """

    @property
    def progress(self) -> float: ...

    @property
    def step(self) -> int: ...

    def backward_step(self, name: str, loss: Tensor) -> None: ...


def linear_decay(progress: float, start: float) -> float:
    """1 until ``start``, then linear to 0 at progress 1 (pix2pix's lr schedule, ASP's lambda)."""
    return 1.0 if progress <= start else max(0.0, (1.0 - progress) / (1.0 - start))


class StainModel(nn.Module, ABC):
    """Base class of every virtual-staining model.

    Subclasses build their networks from ``card.config`` and implement :meth:`infer` (inputs and
    ``ihc`` output in the model's ``normalisation`` range), :meth:`receptive_halo`,
    :meth:`configure_optimizers` and :meth:`training_step`.
    """

    outputs: ClassVar[tuple[str, ...]] = ("ihc",)
    #: Submodules only training uses (discriminators, projection heads): fine-tuning keeps them
    #: trainable whatever part of the stainer it trains.
    training_only: ClassVar[tuple[str, ...]] = ()
    normalisation: ClassVar[str] = "[-1,1]"
    #: Input height and width must be multiples of this (e.g. 4 for two stride-2 stages).
    size_multiple: ClassVar[int] = 1
    #: The allowed values of string predict options (e.g. samplers), for editors and checks.
    option_choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: Outputs given only with some predict options: output -> (option, test of its value).
    optional_outputs: ClassVar[dict[str, tuple[str, Callable[[object], bool]]]] = {}

    def __init__(self, card: ModelCard):
        super().__init__()
        self.card = card

    @property
    def trains_on_dab_masks(self) -> bool:
        """Whether training batches should carry ``"mask"``: coarse DAB masks thresholded with
        the whole dataset's statistics (`PairedDataset(with_mask=True)`)."""
        return False

    @property
    def config(self) -> dict:
        return self.card.config

    def outputs_for(self, options: dict) -> list[str]:
        """The outputs a prediction with ``options`` gives (e.g. uncertainty only with several
        samples), so that a run stores no output that would stay empty."""
        params = inspect.signature(self.infer).parameters
        given = []
        for name in self.outputs:
            option, test = self.optional_outputs.get(name, (None, None))
            if option is None or test(options.get(option, params[option].default)):
                given.append(name)
        return given

    @abstractmethod
    def receptive_halo(self) -> int:
        """Context in px each side of a tile so tiled output equals whole-image output."""

    @abstractmethod
    def infer(self, x: Tensor, **options) -> Prediction:
        """Outputs for ``x`` in the model's range; ``ihc`` in the model's range too."""

    @abstractmethod
    def configure_optimizers(self) -> dict[str, Optimizer]:
        """Optimisers by the names ``training_step`` passes to ``state.backward_step``."""

    @abstractmethod
    def training_step(self, batch: dict[str, Tensor], state: TrainState) -> dict[str, float]:
        """One optimisation step on ``batch``; returns loss values for logging."""

    def lr_factor(self, progress: float) -> float:
        """Learning-rate multiplier at ``progress`` (0..1) of training; constant by default."""
        return 1.0

    def predict(self, he: Tensor, **options) -> Prediction:
        """Virtual stain of ``he`` (B x 3 x H x W, float in [0, 1]) in eval mode, no autograd.

        The model's train/eval mode is restored afterwards, so previews during training are safe.
        """
        self._check_input(he)
        self.check_options(options)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                pred = self.infer(to_model_range(he, self.normalisation), **options)
                return replace(pred, ihc=from_model_range(pred.ihc, self.normalisation))
        finally:
            self.train(was_training)

    def _check_input(self, he: Tensor) -> None:
        if not isinstance(he, Tensor) or he.ndim != 4 or he.shape[1] != 3:
            shape = tuple(he.shape) if isinstance(he, Tensor) else type(he).__name__
            raise ModelError(
                f"{self.card.architecture} needs H&E as a B x 3 x H x W tensor, got {shape}."
            )
        if not he.is_floating_point():
            raise ModelError(
                f"{self.card.architecture} needs float input in [0, 1], got "
                f"{he.dtype}; divide uint8 images by 255."
            )
        h, w = he.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise ModelError(
                f"{self.card.architecture} needs height and width that are "
                f"multiples of {m}, got {h} x {w}. Choose tile and halo sizes that "
                f"are multiples of {m}."
            )

    def check_options(self, options: dict) -> None:
        """Raise ModelError for predict options this model's ``infer`` does not take."""
        params = inspect.signature(self.infer).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        accepted = [name for name in params if name != "x"]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ModelError(
                f"{self.card.architecture} does not take the options {unknown}; "
                f"it accepts {accepted or 'none'}."
            )
        for name, value in options.items():
            check_option_type(name, value, params[name].annotation)
        for name, allowed in self.option_choices.items():
            if name in options and options[name] not in allowed:
                raise ModelError(
                    f"{name} must be one of {', '.join(allowed)}, got {options[name]!r}."
                )


#: Option annotations whose values are checked, and the Python types each admits.
_OPTION_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def check_option_type(name: str, value, annotation) -> None:
    """Raise ModelError when ``value`` does not have the type ``annotation`` (``"int"``,
    ``"int | str"``...) names; other annotations (sequences, objects) are not checked here."""
    parts = [p.strip() for p in str(annotation).split("|")]
    if not all(p in _OPTION_TYPES for p in parts):
        return
    allowed = tuple(t for p in parts for t in _OPTION_TYPES[p])
    if isinstance(value, bool) and bool not in allowed:
        allowed = ()
    if not isinstance(value, allowed):
        raise ModelError(
            f"Option {name} must be {' or '.join(parts)}, got {value!r}; give {name}=<{parts[0]}>."
        )
