"""Model names -> classes and their named configs: ``small`` (fits a CPU) and ``paper`` (GPU)."""

from __future__ import annotations

import copy
import inspect
from dataclasses import fields, replace

import torch

from vstain.errors import ModelError
from vstain.models.base import ModelCard, StainModel
from vstain.models.config_limits import check_weight_memory, config_problems

#: Card fields the registry sets from the architecture; they cannot be overridden.
DERIVED_FIELDS = ("architecture", "config", "halo", "outputs", "normalisation")

_MODELS: dict[str, tuple[type[StainModel], dict[str, dict]]] = {}
#: Per model: config keys added after checkpoints were written, with the value that keeps the
#: behaviour those checkpoints were trained with.
_LEGACY: dict[str, dict] = {}


def register(
    name: str,
    cls: type[StainModel] | None = None,
    *,
    configs: dict[str, dict],
    legacy: dict | None = None,
):
    """Register ``cls`` as ``name`` with named ``configs`` (at least "small" and "paper").

    Usable as a decorator: ``@register("pix2pix", configs={...})``. All configs of a model must have
    the same keys. ``legacy`` gives keys newer than some checkpoints and the values that reproduce
    those checkpoints; a config dict without such a key gets that value.
    """

    def add(model_cls: type[StainModel]) -> type[StainModel]:
        if name in _MODELS and _MODELS[name][0] is not model_cls:
            raise ValueError(f"model name {name!r} is already registered")
        if not {"small", "paper"} <= set(configs):
            raise ValueError(f"{name}: configs need 'small' and 'paper', got {sorted(configs)}")
        if len({frozenset(c) for c in configs.values()}) != 1:
            raise ValueError(f"{name}: all configs must have the same keys")
        if not set(legacy or {}) <= set(configs["small"]):
            raise ValueError(f"{name}: legacy keys must be config keys, got {sorted(legacy)}")
        _MODELS[name] = (model_cls, copy.deepcopy(configs))
        _LEGACY[name] = copy.deepcopy(legacy or {})
        return model_cls

    return add if cls is None else add(cls)


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_MODELS)


def predict_options(name: str) -> dict[str, object]:
    """The predict options of model ``name`` (keyword arguments of its ``infer``) and defaults."""
    params = inspect.signature(_lookup(name)[0].infer).parameters
    return {
        key: p.default
        for key, p in params.items()
        if key not in ("self", "x") and p.default is not inspect.Parameter.empty
    }


def option_choices(name: str, markers: list[str]) -> dict[str, list[str]]:
    """The allowed values of model ``name``'s string predict options; ``marker`` from the card."""
    choices = {k: list(v) for k, v in _lookup(name)[0].option_choices.items()}
    if "marker" in predict_options(name) and markers:
        choices["marker"] = list(markers)
    return choices


def _lookup(name: str) -> tuple[type[StainModel], dict[str, dict]]:
    if name not in _MODELS:
        raise ModelError(f"Unknown model {name!r}. Known models: {', '.join(list_models())}.")
    return _MODELS[name]


def model_configs(name: str) -> dict[str, dict]:
    """The named configs of model ``name`` (copies; edit freely and pass one to :func:`create`)."""
    return copy.deepcopy(_lookup(name)[1])


def resolve_config(name: str, config: str | dict) -> dict:
    """A config name of model ``name``, or a full config dict checked against its keys."""
    configs = _lookup(name)[1]
    if isinstance(config, str):
        if config not in configs:
            raise ModelError(
                f"Model {name!r} has no config {config!r}. "
                f"Known configs: {', '.join(sorted(configs))}."
            )
        return copy.deepcopy(configs[config])
    config = _LEGACY[name] | dict(config)
    expected = set(configs["small"])
    missing, unknown = sorted(expected - set(config)), sorted(set(config) - expected)
    if missing or unknown:
        raise ModelError(
            f"Config for {name!r} does not fit: missing keys {missing}, unknown keys "
            f"{unknown}. Start from vstain.models.model_configs({name!r})['small']."
        )
    problems = config_problems(list(configs.values()), config)
    if problems:
        raise ModelError(f"Config of {name!r} is invalid: {'; '.join(problems)}.")
    return copy.deepcopy(dict(config))


def create(
    name: str, config: str | dict = "small", *, seed: int | None = None, **card_overrides
) -> StainModel:
    """A new model ``name`` with ``config`` ("small", "paper" or a full dict).

    ``seed`` draws the initial weights from that seed (torch's random state is left as it was);
    ``card_overrides`` set other card fields (markers, pixel_size, tile_size, notes, ...).
    """
    resolved = resolve_config(name, config)
    known = {f.name for f in fields(ModelCard)}
    unknown = sorted(set(card_overrides) - known)
    derived = sorted(set(card_overrides) & set(DERIVED_FIELDS))
    if unknown or derived:
        raise ModelError(
            f"Cannot set card fields {unknown + derived} of {name!r}: "
            f"{DERIVED_FIELDS} come from the architecture; other fields are "
            f"{sorted(known - set(DERIVED_FIELDS))}."
        )
    card = ModelCard(architecture=name, config=resolved, **card_overrides)
    if seed is None:
        return build(card)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(card)


def build(card: ModelCard) -> StainModel:
    """Construct the model a card describes and fill the card's derived fields."""
    cls = _lookup(card.architecture)[0]
    config = resolve_config(card.architecture, card.config)
    try:
        check_weight_memory(lambda: cls(replace(card, config=config)), card.architecture)
        model = cls(replace(card, config=config))
    except (ValueError, TypeError) as e:
        raise ModelError(
            f"Config of {card.architecture!r} is invalid: {e}. Start from "
            f"vstain.models.model_configs({card.architecture!r})['small']."
        ) from e
    if card.tile_size % model.size_multiple:  # per model: a U-Net's depends on its config
        raise ModelError(
            f"{card.architecture} needs a tile_size that is a multiple of "
            f"{model.size_multiple}, got {card.tile_size}."
        )
    model.card = replace(
        model.card,
        halo=model.receptive_halo(),
        outputs=list(cls.outputs),
        normalisation=cls.normalisation,
    )
    return model
