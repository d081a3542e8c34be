"""Coarse DAB masks against the simulator's truth: thresholded vs refined by a segmentation net.

python bench/bench_mask_refinement.py --data /tmp/cd3ds --steps 150 300 600 [--seeds 0 1 2]

For each step count and seed, a `mask_net` is trained on the training split's threshold masks (as
``vstain train --refine-masks STEPS`` does) and both kinds of mask are scored against the true
DAB-positive pixels (``truth/<split>/<name>.npz`` "ihc_positive" of a ``vstain synth-dataset``) on
every 4th image of the training split and of the test split (slides the net never saw). With
several seeds (the net's initial weights and crop order), each score is also given as mean +- sd.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vstain.train.datasets import open_paired_dataset, read_rgb
from vstain.train.mask_refinement import predicted_mask, train_mask_net


def scores(data, root: Path, split: str, masks) -> dict:
    """IoU, recall and precision of ``masks(index, pair)`` against the truth, pooled."""
    inter = union = found = true = 0
    for i in range(0, len(data), 4):
        pair = data.pairs[i]
        truth = np.load(root / "truth" / split / f"{pair.name}.npz")["ihc_positive"]
        mask = masks(i, pair)
        inter, union = inter + (mask & truth).sum(), union + (mask | truth).sum()
        found, true = found + mask.sum(), true + truth.sum()
    return {
        "iou": round(inter / union, 3),
        "recall": round(inter / true, 3),
        "precision": round(inter / max(found, 1), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a vstain synth-dataset folder")
    parser.add_argument("--steps", type=int, nargs="+", default=[300])
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.data)
    train = open_paired_dataset(root, split="train", with_mask=True, crop=args.crop, augment=True)
    splits = {s: open_paired_dataset(root, split=s, with_mask=True) for s in ("train", "test")}
    result = {
        f"threshold/{s}": scores(d, root, s, lambda i, p, d=d: d.mask(i)) for s, d in splits.items()
    }
    for steps in args.steps:
        runs = {s: [] for s in splits}
        for seed in args.seeds:
            start = time.perf_counter()
            net = train_mask_net(train, steps=steps, seed=seed)
            result[f"refined {steps} steps seed {seed}: train seconds"] = round(
                time.perf_counter() - start, 1
            )
            for s, d in splits.items():
                runs[s].append(
                    scores(d, root, s, lambda i, p, net=net: predicted_mask(net, read_rgb(p.ihc)))
                )
                result[f"refined {steps} seed {seed}/{s}"] = runs[s][-1]
        if len(args.seeds) > 1:
            for s, found in runs.items():
                result[f"refined {steps}/{s}: mean +- sd"] = {
                    k: f"{np.mean(v):.3f} +- {np.std(v, ddof=1):.3f}"
                    for k, v in ((k, [r[k] for r in found]) for k in found[0])
                }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
