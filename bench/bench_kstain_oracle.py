"""What alignment can buy K-Stain: training with the simulator's true affine as the warp.

K-Stain warps the H&E into the IHC's frame by the affine HSKD fits (Eq. 4-6) before its pixel
loss. Here the warp is the simulator's true H&E -> IHC affine of each training crop instead (an
oracle no real dataset has; the elastic part is left out), so the run bounds what a perfect
affine registration could add over the identity warp (``--set align=false``). Crops are drawn
without augmentation (the true affine is that of the untransformed crop), so compare with an
identity run made by this script too (``--identity``). Checkpoints are ordinary ``k-stain``
ones: score them with ``vstain evaluate``.
Run: ``.venv/bin/python bench/bench_kstain_oracle.py DATASET OUT.safetensors --steps 600
[--identity] [--seed 0] [--resume] [--set KEY=VALUE ...]``.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bench_kstain_registration import true_tile_affine
from vstain.cli import key_value
from vstain.models import create, model_configs
from vstain.models.blocks.affine import normalising_matrix
from vstain.models.k_stain import KStain
from vstain.train.datasets import PairedDataset, open_paired_dataset
from vstain.train.trainer import train


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]])


class TrueAffineCrops(Dataset):
    """Items of a cropped, unaugmented ``PairedDataset`` with ``"affine"``: the crop pair's true
    H&E -> IHC affine in normalised coordinates (3 x 3)."""

    def __init__(self, data: PairedDataset, root: Path):
        if data.augment or data.crop is None:
            raise ValueError("the true affine is that of an unaugmented crop")
        self.data, self.root = data, root

    def set_epoch(self, epoch: int) -> None:
        self.data.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        item, t = self.data[index], self.data.transform(index)
        tile = true_tile_affine(self.root, "train", self.data.pairs[index].name)
        crop = _shift(-t.x0, -t.y0) @ tile @ _shift(t.x0, t.y0)
        n = normalising_matrix(self.data.crop, torch.zeros((), dtype=torch.float64)).numpy()
        item["affine"] = torch.from_numpy(n @ crop @ np.linalg.inv(n)).float()
        return item


class OracleWarpKStain(KStain):
    """K-Stain whose training warp is the batch's true ``"affine"`` instead of HSKD's fit."""

    def training_step(self, batch, state):
        self._true = batch["affine"]
        return super().training_step(batch, state)

    def align(self, he, ihc):
        he_kp, ihc_kp, fitted = super().align(he, ihc)
        return he_kp, ihc_kp, self._true.to(fitted) if self.training else fitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--identity", action="store_true", help="the identity warp instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue OUT to --steps")
    parser.add_argument(
        "--set",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one entry of `small`, as `vstain train --set`",
    )
    args = parser.parse_args()
    config = {**model_configs("k-stain")["small"], "hskd_pretrain_steps": 0, **dict(args.set)}
    if args.identity:
        config["align"] = False
    model = create("k-stain", config, seed=args.seed, markers=["ck818"], pixel_size=0.5)
    if not args.identity:  # the same initial weights, the oracle's warp
        oracle = OracleWarpKStain(model.card)
        oracle.load_state_dict(model.state_dict())
        model = oracle
    crops = open_paired_dataset(args.dataset, split="train", crop=128, seed=args.seed)
    val = open_paired_dataset(args.dataset, split="val", crop=128, seed=args.seed)
    warp = "the identity warp" if args.identity else "the simulator's true affine as the warp"
    model.card.notes = f"bound on alignment: trained with {warp}, no augmentation"
    result = train(
        model,
        TrueAffineCrops(crops, args.dataset),
        steps=args.steps,
        batch_size=4,
        val_data=val,
        val_limit=32,
        checkpoint_path=args.out,
        resume=args.resume,
        seed=args.seed,
    )
    print(f"{args.out}: {result.steps} steps; validation {result.validation[-1:]}")


if __name__ == "__main__":
    main()
