"""Inference speed of models on this machine: tiles/s at 256 px tiles with each model's halo.

Every model runs ``predict`` on the same batches of random H&E windows (tile + 2 x halo), after
one warm-up batch; the best of ``--repeats`` timings is kept. Shared machines are noisy, so the
ratio to the first model (measured in the same run) is printed next to the absolute figure.
Run: ``.venv/bin/python bench/bench_model_speed.py [MODEL[:CONFIG] or CKPT ...] [--options JSON]``
(default: ``pix2pix implicit-stainer``, both ``small``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vstain.models import create, load_checkpoint


def load(spec: str):
    """A checkpoint path, or ``name[:config]`` of an untrained model (speed needs no training)."""
    if Path(spec).exists():
        return load_checkpoint(spec, device="cpu")
    name, _, config = spec.partition(":")
    return create(name, config or "small")


def tiles_per_second(model, tile: int, batch: int, repeats: int, options: dict) -> float:
    """Tiles per second of ``model.predict`` on ``batch`` windows of ``tile`` + 2 halo px."""
    side = tile + 2 * model.card.halo
    x = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
    model.eval()
    model.predict(x, **options)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(x, **options)
        best = min(best, time.perf_counter() - t0)
    return batch / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", default=["pix2pix", "implicit-stainer"])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--options", default="{}", help="predict options, e.g. '{\"steps\": 20}'")
    args = parser.parse_args()
    options = json.loads(args.options)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tile {args.tile} px")
    first = None
    for spec in args.models:
        model = load(spec)
        rate = tiles_per_second(model, args.tile, args.batch, args.repeats, options)
        first = first or rate
        print(
            f"{spec:>28}: {rate:7.2f} tiles/s (halo {model.card.halo} px), "
            f"{first / rate:5.1f} x the time of {args.models[0]}"
        )


if __name__ == "__main__":
    main()
