"""Coarse DAB masks refined by a segmentation net trained on them (StainDiffuser's supplement).

Thresholding DAB marks cells inconsistently where staining varies (the paper saw it on CD3), so
the paper trained a segmentation model on the noisy threshold masks and used its predictions as
the coarse masks. Here the net reads the IHC (the image the threshold read), sees about 31 px
around each pixel, and is trained with binary cross-entropy on the dataset's own random crops;
its predictions at 0.5 get the threshold masks' clean-up (small objects, small holes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from vstain.color.dab_mask import MASK_MAX_HOLE, MASK_MIN_SIZE, clean_mask
from vstain.train.datasets import PairedDataset, read_rgb


def mask_net(width: int = 24) -> nn.Sequential:
    """IHC (B x 3 x H x W in [0, 1]) -> mask logits (B x 1 x H x W); dilated 3 x 3 convolutions,
    receptive field 31 px."""
    layers, channels = [], 3
    for dilation in (1, 2, 4, 8):
        layers += [nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.Conv2d(width, 1, 1))


def train_mask_net(
    dataset: PairedDataset,
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log: Callable[[int, float], None] | None = None,
) -> nn.Sequential:
    """A `mask_net` fitted for ``steps`` to the threshold masks of ``dataset`` (opened with
    masks; its crops and augmentation are used as they are)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = mask_net().to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    order = np.random.default_rng(seed)
    for step in range(steps):
        dataset.set_epoch(step)
        items = [dataset[int(i)] for i in order.integers(0, len(dataset), batch_size)]
        ihc = torch.stack([item["ihc"] for item in items]).to(device)
        target = torch.stack([item["mask"] for item in items]).to(device)
        loss = nn.functional.binary_cross_entropy_with_logits(net(ihc), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if log is not None:
            log(step + 1, loss.item())
    return net.eval()


@torch.inference_mode()
def predicted_mask(net: nn.Sequential, ihc: np.ndarray) -> np.ndarray:
    """(H, W) bool mask the net predicts for an (H, W, 3) uint8 IHC image, cleaned up as the
    threshold masks are."""
    device = next(net.parameters()).device
    x = torch.from_numpy(ihc.transpose(2, 0, 1).astype(np.float32) / 255.0)[None].to(device)
    return clean_mask((net(x)[0, 0] > 0).cpu().numpy(), MASK_MIN_SIZE, MASK_MAX_HOLE)


def refine_masks(dataset: PairedDataset, steps: int, **train_options) -> nn.Sequential:
    """Train a `mask_net` on ``dataset``'s threshold masks and give the dataset its predictions
    as masks from now on; returns the net."""
    net = train_mask_net(dataset, steps=steps, **train_options)
    dataset.use_masks({p.name: predicted_mask(net, read_rgb(p.ihc)) for p in dataset.pairs})
    return net
