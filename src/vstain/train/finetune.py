"""Fine-tune a checkpoint on rectangles of a slide pair (H&E + registered IHC).

The base checkpoint is never written: the run trains into ``OUT.work.safetensors`` (resumable,
with its training state beside it) and ``OUT`` always holds the best validated weights so far
(highest validation PSNR), copied atomically, so Stop, a crash or a NaN keep the best result.
The base competes: when no fine-tuned step validates better than the base did, ``OUT`` holds the
base's weights and the result carries a warning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from vstain.errors import VstainError
from vstain.io.atomic import copy_atomically
from vstain.io.slide import Slide
from vstain.models.base import StainModel
from vstain.models.checkpoint import (
    beside,
    load_checkpoint,
    read_card,
    save_checkpoint,
    sha256_file,
)
from vstain.models.registry import resolve_config
from vstain.train.regions import IhcReader, Region, region_datasets
from vstain.train.trainer import train

#: What to train: every weight, the second half of the stainer (decoder and last blocks), or
#: only normalisation layers. Training-only parts (discriminators) always train.
PARTS = ("all", "decoder", "norm")
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
#: Validation scores copied into the card before and after fine-tuning.
SCORES = ("psnr", "ssim", "dab_correlation", "object_f1")


class FinetuneError(VstainError):
    """A fine-tuning run cannot start (same output as base, unknown part, no learning rate)."""


def _stainer_parameters(model: StainModel) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the trainable weights outside ``model.training_only``, in order."""
    skip = tuple(f"{name}." for name in model.training_only)
    return [
        (n, p) for n, p in model.named_parameters() if p.requires_grad and not n.startswith(skip)
    ]


def _norm_parameter_names(model: StainModel) -> set[str]:
    return {
        f"{module_name}.{name}"
        for module_name, module in model.named_modules()
        if isinstance(module, NORM_TYPES)
        for name, _ in module.named_parameters(recurse=False)
    }


def select_part(model: StainModel, part: str) -> int:
    """Freeze the stainer's weights outside ``part`` (see PARTS); returns how many weights of
    the stainer stay trainable. Weights that were frozen already (perceptual backbones) stay so."""
    if part not in PARTS:
        raise FinetuneError(f"Unknown part {part!r}: choose one of {', '.join(PARTS)}.")
    stainer = _stainer_parameters(model)
    if part == "all":
        chosen = {n for n, _ in stainer}
    elif part == "decoder":
        chosen = {n for n, _ in stainer[len(stainer) // 2 :]}
    else:
        chosen = _norm_parameter_names(model) & {n for n, _ in stainer}
    if not chosen:
        raise FinetuneError(
            f"{model.card.architecture} has no {part} weights to train; choose another part."
        )
    for name, p in stainer:
        p.requires_grad_(name in chosen)
    return sum(p.numel() for n, p in stainer if n in chosen)


def trainable_counts(model: StainModel) -> dict[str, int]:
    """Weights each part would train, without changing ``model`` (for the widget's label)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    counts = {}
    for part in PARTS:
        try:
            counts[part] = select_part(model, part)
        except FinetuneError:
            counts[part] = 0
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
    return counts


class _KeepBest:
    """Trainer callback: after each save, copy the work checkpoint to ``out`` when the validation
    at that step is the best so far, the base's included (or always, when there is no
    validation)."""

    def __init__(self, out: Path, validated: bool, base: dict | None = None):
        self.out, self.validated = out, validated
        self.base = base
        self.best: dict | None = None
        self.best_step: int | None = None
        self._last: tuple[int, dict] | None = None

    def on_validation(self, step: int, metrics: dict) -> None:
        self._last = (step, metrics)

    @property
    def validated_once(self) -> bool:
        return self._last is not None

    def on_checkpoint(self, path: Path) -> None:
        if not self.validated:
            copy_atomically(path, self.out)
            return
        if self._last is None:
            return
        step, metrics = self._last
        best = self.best or self.base
        if best is None or metrics["psnr"] > best["psnr"]:
            self.best, self.best_step = metrics, step
            copy_atomically(path, self.out)


@dataclass
class FinetuneResult:
    """The kept checkpoint (None: stopped before the first validation), the step it is from,
    and its validation scores before and after fine-tuning (None: no validation regions)."""

    checkpoint: Path | None
    steps: int
    best_step: int | None
    before: dict | None
    after: dict | None
    cancelled: bool
    losses: list[dict[str, float]]
    warning: str | None = None


def work_path(out: Path) -> Path:
    """Where a fine-tune into ``out`` trains (and resumes from)."""
    return beside(out, ".work.safetensors")


def _scores(metrics: dict) -> dict:
    return {k: metrics[k] for k in SCORES if k in metrics}


def finetune(
    base: str | Path,
    he: Slide,
    ihc: Slide | IhcReader,
    regions: Sequence[Region],
    out: str | Path,
    *,
    part: str = "all",
    steps: int = 300,
    lr: float | None = None,
    batch_size: int = 4,
    crop: int = 128,
    level: int = 0,
    augment: bool = True,
    val_every: int = 50,
    device: str = "auto",
    seed: int = 0,
    resume: bool = False,
    sources: dict | None = None,
    callbacks: Sequence = (),
    cancel=None,
) -> FinetuneResult:
    """Fine-tune checkpoint ``base`` on ``regions`` (level-0 rectangles of ``he``; those flagged
    ``validation`` score the run) and keep the best weights in ``out``.

    ``ihc`` is the registered IHC (a Slide of the H&E's geometry, or a reader such as
    ``partial(registration.warp_ihc_tile, ihc_slide)``); ``sources`` describes the slides for
    the card (e.g. their paths). ``lr`` replaces the model's learning rate.
    """
    base, out = Path(base), Path(out)
    check_paths(base, out, resume)
    model = load_checkpoint(base)
    base_card = model.card
    config = dict(model.card.config)
    if lr is not None:
        if "lr" not in config:
            raise FinetuneError(f"{model.card.architecture} has no learning rate to set.")
        config["lr"] = lr
        config = resolve_config(model.card.architecture, config)  # refuses NaN or negative lr
    crops, grid = region_datasets(he, ihc, regions, crop, level=level, seed=seed, augment=augment)
    n_trainable = select_part(model, part)
    provenance = {
        "kind": "finetune",
        "base_steps": model.card.steps,
        "base_metrics": model.card.metrics,
        "slides": sources or {"he": str(he.path)},
        "level": level,
        "regions": [dataclasses.asdict(r) for r in regions],
        "part": part,
        "trainable_weights": n_trainable,
        "lr": config.get("lr"),
        "batch_size": batch_size,
        "crop": crop,
        "augment": augment,
        "seed": seed,
    }
    if resume:
        check_resumed_settings(work_path(out), provenance)
    model.card = dataclasses.replace(
        model.card,
        config=config,
        parent=str(base),
        parent_sha256=sha256_file(base),
        metrics={},
        provenance=provenance,
    )
    before = None
    if grid is not None:
        from vstain.train.evaluate import evaluate

        before = _scores(evaluate(model, grid, device=device, learned=False))
    keeper = _KeepBest(out, validated=grid is not None, base=before)
    if resume and out.exists():  # the best kept before the interruption still counts
        keeper.best = read_card(out).metrics
    result = train(
        model,
        crops,
        steps=steps,
        batch_size=batch_size,
        val_data=grid,
        val_every=val_every,
        checkpoint_path=work_path(out),
        checkpoint_every=val_every,
        resume=resume,
        device=device,
        seed=seed,
        training_data=f"fine-tune on {len(crops)} crops per epoch from {len(regions)} regions",
        callbacks=[*callbacks, keeper],
        cancel=cancel,
    )
    warning = None
    if keeper.validated_once and keeper.best is None:
        warning = _keep_base(base, base_card, out, before, provenance)
        keeper.best, keeper.best_step = before, 0
    after = _scores(keeper.best) if keeper.best is not None else None
    if out.exists():
        kept = load_checkpoint(out)
        kept.card = dataclasses.replace(
            kept.card, metrics={**kept.card.metrics, "before": before, "after": after}
        )
        save_checkpoint(kept, out)
    kept_step = keeper.best_step if grid is not None else result.steps
    return FinetuneResult(
        out if out.exists() else None,
        result.steps,
        kept_step,
        before,
        after,
        result.cancelled,
        result.losses,
        warning,
    )


def check_paths(base: Path, out: Path, resume: bool) -> None:
    """Refuse outputs that would write the base: ``out`` itself, or the run's work files."""
    from vstain.train.resume_state import state_path

    work = work_path(out)
    for path in (out, work, state_path(work)):
        if path.resolve() == base.resolve():
            raise FinetuneError(
                f"Fine-tuning into {out.name} would write {path.name}, the base checkpoint: "
                "choose another output name; the base is never written."
            )
    if out.exists() and not resume:
        raise FinetuneError(f"{out} exists. Choose another output, or resume that run.")


#: Settings a resumed fine-tune must share with the run it continues.
RESUMED = ("regions", "part", "lr", "batch_size", "crop", "augment", "seed", "level")


def check_resumed_settings(work: Path, provenance: dict) -> None:
    """Refuse to resume a fine-tune with other settings than it started with."""
    if not work.exists():
        return  # the trainer says there is nothing to resume
    started = read_card(work).provenance
    differ = [k for k in RESUMED if k in started and started[k] != provenance[k]]
    if differ:
        was = ", ".join(f"{k}={started[k]!r}" for k in differ if k != "regions")
        raise FinetuneError(
            f"This run was started with other {', '.join(differ)} ({was or 'other regions'}); "
            "resume it with the same settings, or start a new run with another output."
        )


def _keep_base(base: Path, card, out: Path, before: dict, provenance: dict) -> str:
    """Write the base's weights to ``out`` (no fine-tuned step validated better); the warning."""
    kept = load_checkpoint(base)
    kept.card = dataclasses.replace(
        card,
        parent=str(base),
        parent_sha256=sha256_file(base),
        metrics={},
        provenance={**provenance, "kept": "base: no fine-tuned step validated better"},
    )
    save_checkpoint(kept, out)
    return (
        f"No fine-tuned step validated better than the base (PSNR {before['psnr']:.2f} dB); "
        f"{out.name} holds the base's weights. Try a lower learning rate or other regions."
    )
