"""Range checks of a model config before the model is built, derived from the registered configs.

A value must have the type of the registered values of its key (an int may stand for a float,
null for a string).
Integers lie between 1 (0 where a registered config uses 0) and `INT_FACTOR` times the largest
registered value, at least `INT_FLOOR`; floats are finite, learning rates (`POSITIVE`) positive
and Adam's betas (`FRACTIONS`) in [0, 1). Lists are at most `LIST_FACTOR` times as long as the
longest registered one, their elements checked the same way. Then `check_weight_memory` builds
the model on torch's meta device (no memory) and refuses weights that would not fit in a quarter
of the machine's memory.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vstain.errors import ModelError
from vstain.io.limits import finite_number, machine_memory
from vstain.triton_guard import guard_triton

INT_FACTOR = 16
INT_FLOOR = 1024
LIST_FACTOR = 4
#: Float keys that must be positive (learning rates) or lie in [0, 1) (Adam's betas).
POSITIVE = ("lr", "hskd_pretrain_lr", "hskd_gain")
FRACTIONS = ("beta1", "beta2")
#: Training holds weights, gradients and two Adam moments: four copies.
TRAINING_COPIES = 4


def config_problems(registered: list[dict], config: dict) -> list[str]:
    """Why ``config`` is out of the ranges the ``registered`` configs of its model allow."""
    problems = []
    for key, value in config.items():
        problem = _value_problem(key, [c[key] for c in registered], value)
        if problem:
            problems.append(f"{key} {problem}, got {value!r}")
    return problems


def _value_problem(key: str, known: list, value: object) -> str | None:
    if all(isinstance(v, list) for v in known):
        longest = max(len(v) for v in known)
        if not isinstance(value, list) or len(value) > LIST_FACTOR * max(longest, 1):
            return f"must be a list of at most {LIST_FACTOR * max(longest, 1)} entries"
        elements = [e for v in known for e in v]
        problems = [_value_problem(key, elements, e) for e in value] if elements else []
        return next((f"entries {p}" for p in problems if p), None)
    check = _scalar_check(key, known)
    return None if check is None else check(value)


def _scalar_check(key: str, known: list) -> Callable[[object], str | None] | None:
    """A function giving what is wrong with a value of ``key`` (None: nothing), from its
    registered values ``known``; None when they have no common scalar type."""
    if all(isinstance(v, bool) for v in known):
        return lambda v: None if isinstance(v, bool) else "must be true or false"
    if all(isinstance(v, str) for v in known):
        return lambda v: None if v is None or isinstance(v, str) else "must be a string or null"
    if not all(finite_number(v) for v in known):
        return None
    if all(isinstance(v, int) for v in known):
        low, high = min(1, *known), max(INT_FACTOR * max(known), INT_FLOOR)
        return lambda v: (
            None
            if isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
            else f"must be an integer from {low} to {high}"
        )

    def check(v: object) -> str | None:
        if not finite_number(v):
            return "must be a finite number"
        if key in POSITIVE and v <= 0:
            return "must be positive"
        if key in FRACTIONS and not 0 <= v < 1:
            return "must lie in [0, 1)"
        return None

    return check


def check_weight_memory(make: Callable[[], nn.Module], name: str) -> None:
    """Build ``make()`` on the meta device and raise `ModelError` if its weights, times the copies
    training keeps, would not fit in the machine's memory."""
    guard_triton()  # initialising meta tensors runs torch._refs, which imports torch._dynamo
    with torch.device("meta"):
        probe = make()
    tensors = [*probe.parameters(), *probe.buffers()]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    memory = machine_memory()
    if memory is not None and TRAINING_COPIES * nbytes > memory:
        raise ModelError(
            f"{name} with this config has {sum(t.numel() for t in tensors):,} weights "
            f"({nbytes / 2**30:.1f} GiB), more than a quarter of this machine's memory; choose "
            "a smaller config (fewer blocks or channels)."
        )
