"""StainDiffuser samplers: quality and time per tile, and whether its uncertainty points at errors.

``table``: the ancestral DDPM sampler with all T steps against DDIM and DPM-Solver++ at a few step
counts on the first ``--limit`` test tiles of a paired dataset: PSNR, SSIM, positive-object F1
(``vstain.train.evaluate``), seconds per tile, speed-up and PSNR loss against full DDPM.
``uncertainty``: per tile, the mean of the ``uncertainty`` output (std over ``--samples`` draws)
and the mean absolute error of the mean image against the real IHC; their Pearson and Spearman
correlations over the tiles.
Run: ``.venv/bin/python bench/bench_samplers.py {table,uncertainty} CKPT DATASET [--limit N]
[--crop PX]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from vstain.models import load_checkpoint
from vstain.models.device import choose_device, predict_batch
from vstain.train.datasets import open_paired_dataset
from vstain.train.evaluate import evaluate


def score(model, data, limit: int, options: dict) -> dict:
    """PSNR, SSIM, object F1 and seconds per tile of ``model`` with predict ``options``."""
    t0 = time.perf_counter()
    result = evaluate(model, data, limit=limit, learned=False, batch_size=4, options=options)
    result["seconds_per_tile"] = (time.perf_counter() - t0) / result["images"]
    return result


def table(model, data, limit: int, steps: list[int]) -> None:
    runs = [("ddpm", model.schedule.timesteps)]
    runs += [(s, k) for s in ("ddim", "dpm-solver++") for k in steps]
    ref = None
    print(
        f"{'sampler':>13} {'steps':>5} {'PSNR':>6} {'SSIM':>6} {'F1':>6} {'s/tile':>7} "
        f"{'speed-up':>8} {'dPSNR':>6}"
    )
    for sampler, k in runs:
        r = score(model, data, limit, {"sampler": sampler, "steps": k})
        ref = ref or r
        print(
            f"{sampler:>13} {k:5d} {r['psnr']:6.2f} {r['ssim']:6.3f} {r['object_f1']:6.3f} "
            f"{r['seconds_per_tile']:7.2f} {ref['seconds_per_tile'] / r['seconds_per_tile']:8.1f} "
            f"{r['psnr'] - ref['psnr']:6.2f}"
        )


def uncertainty(model, data, limit: int, samples: int, steps: int) -> None:
    dev = choose_device("auto")
    model.to(dev)
    spread, error = [], []
    for i in range(min(limit, len(data))):
        item = data[i]
        out = predict_batch(model, item["he"][None], dev, steps=steps, n_samples=samples)
        spread.append(float(np.mean(out["uncertainty"])))
        error.append(float(np.abs(out["ihc"][0] - item["ihc"].numpy()).mean()))
    print(f"{len(spread)} tiles, {samples} samples of {steps} DDIM steps each")
    print(f"mean uncertainty {np.mean(spread):.4f}, mean absolute error {np.mean(error):.4f}")
    r, rho = pearsonr(spread, error)[0], spearmanr(spread, error)[0]
    print(f"Pearson r {r:.3f}, Spearman rho {rho:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["table", "uncertainty"])
    parser.add_argument("checkpoint")
    parser.add_argument("dataset")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--crop", type=int, help="score crops of this size (full DDPM is slow)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_checkpoint(args.checkpoint).eval()
    data = open_paired_dataset(args.dataset, split="test", crop=args.crop)
    if args.mode == "table":
        table(model, data, args.limit, args.steps)
    else:
        uncertainty(model, data, args.limit, args.samples, args.steps[0])


if __name__ == "__main__":
    main()
