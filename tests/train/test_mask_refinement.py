"""A segmentation net trained on noisy masks marks the cells more consistently than its labels."""

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.draw import disk

from vstain.errors import DatasetError
from vstain.train.datasets import Pair, PairedDataset
from vstain.train.mask_refinement import predicted_mask, refine_masks, train_mask_net

SIZE = 96


def brown_cells(rng) -> tuple[np.ndarray, np.ndarray]:
    """(IHC image, mask): brown discs of radius 4-6 on a pale blue background."""
    image = np.empty((SIZE, SIZE, 3), np.uint8)
    image[:] = (205, 210, 230)
    mask = np.zeros((SIZE, SIZE), bool)
    for y, x in rng.integers(8, SIZE - 8, (14, 2)):
        cell = disk((y, x), rng.integers(4, 7), shape=mask.shape)
        image[cell], mask[cell] = (150, 95, 50), True
    return image, mask


@pytest.fixture
def noisy_cells(tmp_path):
    """A dataset of 4 pairs whose masks miss a fifth of the cells, and the true masks."""
    rng = np.random.default_rng(0)
    pairs, truth, noisy = [], {}, {}
    for i in range(8):
        ihc, mask = brown_cells(rng)
        he, ihc_path = tmp_path / f"he{i}.png", tmp_path / f"ihc{i}.png"
        iio.imwrite(he, ihc)
        iio.imwrite(ihc_path, ihc)
        name = f"p{i}"
        pairs.append(Pair(name, he, ihc_path, (SIZE, SIZE)))
        labels, n = ndimage.label(mask)
        dropped = rng.random(n + 1) < 0.2
        truth[name], noisy[name] = mask, mask & ~dropped[labels]
    data = PairedDataset(pairs, crop=48, augment=True, with_mask=True, mask_stats="image")
    data.use_masks(noisy)
    return data, truth, noisy


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_refined_masks_find_the_cells_the_noisy_masks_missed(noisy_cells):
    data, truth, noisy = noisy_cells
    net = refine_masks(data, 300, batch_size=4, seed=0)
    refined = {p.name: data.mask(i) for i, p in enumerate(data.pairs)}
    before = np.mean([iou(noisy[n], truth[n]) for n in truth])
    after = np.mean([iou(refined[n], truth[n]) for n in truth])
    assert before < 0.8 and after > 0.88
    assert data[0]["mask"].shape == (1, 48, 48)  # the items now carry the refined masks
    with pytest.raises(DatasetError, match="No mask of the image's size"):
        data.use_masks({"p0": np.zeros((5, 5), bool)})
    assert predicted_mask(net, np.full((40, 30, 3), 255, np.uint8)).shape == (40, 30)


def test_mask_net_training_is_seeded(noisy_cells):
    data = noisy_cells[0]
    a, b = (train_mask_net(data, steps=3, batch_size=2, seed=5) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
