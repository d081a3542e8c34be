from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage.draw import disk

from vstain.color import HED, DabStats, coarse_dab_mask, concentrations_to_rgb, dab_od
from vstain.color.stain_augment import perturb_stains
from vstain.train import datasets
from vstain.train.datasets import DatasetError, PairedDataset, open_paired_dataset

SIZE = 64


def he_tile(seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    conc = np.zeros((*size, 3))
    conc[..., :2] = rng.uniform(0.05, 0.8, (*size, 2))
    return concentrations_to_rgb(conc, HED)


def ihc_tile(seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    """Light hematoxylin everywhere and one strongly DAB-stained disc."""
    rng = np.random.default_rng(seed)
    conc = np.zeros((*size, 3))
    conc[..., 0] = rng.uniform(0.05, 0.3, size)
    conc[..., 2] = rng.uniform(0.0, 0.05, size)
    conc[(*disk((size[0] // 2, size[1] // 3), size[0] // 6, shape=size), 2)] = 0.9
    return concentrations_to_rgb(conc, HED)


def write_pairs(he_dir: Path, ihc_dir: Path, names, ihc_suffix=".png", seed=0) -> None:
    he_dir.mkdir(parents=True, exist_ok=True)
    ihc_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        iio.imwrite(he_dir / f"{name}.png", he_tile(seed + i))
        iio.imwrite(ihc_dir / f"{name}{ihc_suffix}", ihc_tile(seed + i))


@pytest.fixture
def bci(tmp_path) -> Path:
    root = tmp_path / "BCI"
    write_pairs(root / "HE" / "train", root / "IHC" / "train", ["00000_train_1+", "00001_train_3+"])
    write_pairs(root / "HE" / "test", root / "IHC" / "test", ["00000_test_2+"], seed=10)
    return root


def as_uint8(t: torch.Tensor) -> np.ndarray:
    """3 x H x W tensor in [0, 1] -> H x W x 3 uint8."""
    return np.rint(t.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)


def test_bci_items_match_the_files(bci):
    ds = open_paired_dataset(bci)
    assert len(ds) == 2 and [p.name for p in ds.pairs] == ["00000_train_1+", "00001_train_3+"]
    item = ds[1]
    assert set(item) == {"he", "ihc", "name"} and item["name"] == "00001_train_3+"
    for key in ("he", "ihc"):
        assert item[key].dtype == torch.float32 and item[key].shape == (3, SIZE, SIZE)
        assert item[key].min() >= 0.0 and item[key].max() <= 1.0
    np.testing.assert_array_equal(
        as_uint8(item["he"]), iio.imread(bci / "HE/train/00001_train_3+.png")
    )
    np.testing.assert_array_equal(as_uint8(item["ihc"]), ihc_tile(1))
    test = open_paired_dataset(bci, split="test", layout="bci")
    assert [p.name for p in test.pairs] == ["00000_test_2+"]


def test_mist_markers_and_splits(tmp_path):
    for marker in ("HER2", "Ki67"):
        base = tmp_path / marker / "TrainValAB"
        write_pairs(base / "trainA", base / "trainB", ["a", "b", "c"])
        write_pairs(base / "valA", base / "valB", ["v"])
    with pytest.raises(DatasetError, match=r"several markers.*HER2, Ki67"):
        open_paired_dataset(tmp_path)
    assert len(open_paired_dataset(tmp_path, marker="Ki67")) == 3
    assert [p.name for p in open_paired_dataset(tmp_path, marker="HER2", split="val").pairs] == [
        "v"
    ]
    assert len(open_paired_dataset(tmp_path / "HER2")) == 3  # the marker folder itself
    with pytest.raises(DatasetError, match="no MIST marker 'ER'"):
        open_paired_dataset(tmp_path, marker="ER")
    with pytest.raises(DatasetError, match=r"no split 'test'.*train, val"):
        open_paired_dataset(tmp_path, marker="HER2", split="test")


def test_folder_pairs_by_stem_with_and_without_split(tmp_path):
    write_pairs(tmp_path / "he", tmp_path / "ihc", ["x1", "x2"], ihc_suffix=".tif")
    ds = open_paired_dataset(tmp_path)
    assert [(p.he.name, p.ihc.name) for p in ds.pairs] == [
        ("x1.png", "x1.tif"),
        ("x2.png", "x2.tif"),
    ]
    (tmp_path / "he" / "notes.txt").write_text("not an image")
    assert len(open_paired_dataset(tmp_path, layout="folder")) == 2
    write_pairs(tmp_path / "he" / "val", tmp_path / "ihc" / "val", ["y"])
    assert [p.name for p in open_paired_dataset(tmp_path, split="val").pairs] == ["y"]


def test_unpaired_images_are_listed(tmp_path):
    write_pairs(tmp_path / "he", tmp_path / "ihc", [f"n{i}" for i in range(8)])
    for i in range(7):
        (tmp_path / "ihc" / f"n{i}.png").unlink()
    iio.imwrite(tmp_path / "ihc" / "stray.png", ihc_tile(0))
    with pytest.raises(DatasetError) as err:
        open_paired_dataset(tmp_path)
    msg = str(err.value)
    assert "7 H&E image(s)" in msg and "n0, n1, n2, n3, n4 and 2 more" in msg
    assert "1 IHC image(s)" in msg and "stray" in msg and "same name" in msg


def test_size_mismatch_empty_folder_and_unknown_root(tmp_path):
    write_pairs(tmp_path / "he", tmp_path / "ihc", ["ok", "bad"])
    iio.imwrite(tmp_path / "ihc" / "bad.png", ihc_tile(0, (SIZE, SIZE + 8)))
    with pytest.raises(
        DatasetError, match=r"1 pair\(s\).*differ in size: bad \(H&E 64x64, IHC 72x64\)"
    ):
        open_paired_dataset(tmp_path)
    empty = tmp_path / "empty"
    (empty / "HE" / "train").mkdir(parents=True)
    (empty / "IHC" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no images"):
        open_paired_dataset(empty)
    with pytest.raises(DatasetError, match="no split 'extra'"):
        open_paired_dataset(empty, split="extra")
    with pytest.raises(DatasetError, match=r"HE/val is not a folder"):
        open_paired_dataset(empty, split="val")
    with pytest.raises(DatasetError, match="not a paired dataset"):
        open_paired_dataset(empty / "HE")
    with pytest.raises(DatasetError, match="not a folder"):
        open_paired_dataset(tmp_path / "missing")


def test_crop_is_the_same_window_and_turns_on_both(tmp_path):
    # H&E file == IHC file, so any difference comes from the transform alone.
    (tmp_path / "he").mkdir()
    (tmp_path / "ihc").mkdir()
    for i in range(4):
        image = he_tile(i, (SIZE, SIZE + 16))
        iio.imwrite(tmp_path / "he" / f"p{i}.png", image)
        iio.imwrite(tmp_path / "ihc" / f"p{i}.png", image)
    plain = open_paired_dataset(tmp_path, crop=32)
    for i in range(4):
        item, t = plain[i], plain.transform(i)
        assert item["he"].shape == (3, 32, 32) and torch.equal(item["he"], item["ihc"])
        np.testing.assert_array_equal(
            as_uint8(item["ihc"]), he_tile(i, (SIZE, SIZE + 16))[t.y0 : t.y0 + 32, t.x0 : t.x0 + 32]
        )
    aug = open_paired_dataset(tmp_path, crop=(32, 48), augment=True, seed=3)
    seen = set()
    for epoch in range(6):
        aug.set_epoch(epoch)
        for i in range(4):
            item, t = aug[i], aug.transform(i)
            seen.add((t.turns, t.flip))
            assert t.turns in (0, 2)  # non-square crops only turn by 180 degrees
            he, ihc = as_uint8(item["he"]), as_uint8(item["ihc"])
            assert he.shape == ihc.shape == (32, 48, 3)
            expected = np.rot90(
                he_tile(i, (SIZE, SIZE + 16))[t.y0 : t.y0 + 32, t.x0 : t.x0 + 48], t.turns
            )
            np.testing.assert_array_equal(ihc, expected[:, ::-1] if t.flip else expected)
            # The stain jitter is per pixel, so it commutes with the geometry: H&E only.
            np.testing.assert_array_equal(
                he, perturb_stains(ihc, np.array(t.scale), np.array(t.shift))
            )
            assert not np.array_equal(he, ihc)
    assert len(seen) == 4


def test_randomness_depends_on_seed_epoch_and_index(bci):
    ds = open_paired_dataset(bci, crop=24, augment=True, seed=1)
    first = ds[0]["he"]
    assert torch.equal(first, ds[0]["he"])
    assert torch.equal(first, open_paired_dataset(bci, crop=24, augment=True, seed=1)[0]["he"])
    assert not torch.equal(first, open_paired_dataset(bci, crop=24, augment=True, seed=2)[0]["he"])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[0]["he"])
    ds.set_epoch(0)
    assert torch.equal(first, ds[0]["he"])


def test_dataloader_workers_give_the_same_items(bci):
    ds = open_paired_dataset(bci, crop=24, augment=True, with_mask=True, seed=5)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batch = next(iter(loader))
    assert batch["he"].shape == (2, 3, 24, 24) and batch["mask"].shape == (2, 1, 24, 24)
    for i in range(2):
        assert torch.equal(batch["he"][i], ds[i]["he"]) and torch.equal(
            batch["mask"][i], ds[i]["mask"]
        )


def test_masks_follow_the_ihc_and_are_cached(bci, tmp_path, monkeypatch):
    stats = DabStats(0.1, 0.15)  # threshold 0.4: only the DAB disc
    ds = open_paired_dataset(bci, with_mask=True, mask_stats=stats, crop=40, augment=True, seed=2)
    item, t = ds[0], ds.transform(0)
    assert item["mask"].dtype == torch.float32 and item["mask"].shape == (1, 40, 40)
    full = coarse_dab_mask(ihc_tile(0), stats=stats)
    disc = np.zeros((SIZE, SIZE), bool)
    disc[disk((SIZE // 2, SIZE // 3), SIZE // 6)] = True
    assert (full == disc).mean() > 0.99
    expected = np.rot90(full[t.y0 : t.y0 + 40, t.x0 : t.x0 + 40], t.turns)
    expected = expected[:, ::-1] if t.flip else expected
    np.testing.assert_array_equal(item["mask"][0].numpy(), expected.astype(np.float32))

    calls = []
    real = datasets.coarse_dab_mask
    monkeypatch.setattr(
        datasets, "coarse_dab_mask", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    for _ in range(3):
        ds[1]
    assert len(calls) == 1  # memory cache

    cache = tmp_path / "cache"
    dataset_files = sorted(bci.rglob("*"))
    on_disk = open_paired_dataset(bci, with_mask=True, mask_stats=stats, mask_cache_dir=cache)
    on_disk[0]
    (png,) = cache.rglob("00000_train_1+.png")
    np.testing.assert_array_equal(iio.imread(png) > 0, full)
    monkeypatch.setattr(datasets, "coarse_dab_mask", lambda *a, **k: pytest.fail("recomputed"))
    again = open_paired_dataset(bci, with_mask=True, mask_stats=stats, mask_cache_dir=cache)
    np.testing.assert_array_equal(again[0]["mask"][0].numpy(), full.astype(np.float32))
    assert sorted(bci.rglob("*")) == dataset_files  # nothing written into the dataset


def test_dataset_statistics_and_cache_inside_dataset(bci):
    ds = open_paired_dataset(bci, with_mask=True)
    dab = np.concatenate([dab_od(ihc_tile(i)).ravel() for i in range(2)])
    assert ds.mask_stats.mean == pytest.approx(dab.mean(), abs=0.01)
    assert ds.mask_stats.std == pytest.approx(dab.std(), abs=0.01)
    per_image = open_paired_dataset(bci, with_mask=True, mask_stats="image")
    assert per_image.mask_stats is None
    np.testing.assert_array_equal(per_image.mask(0), coarse_dab_mask(ihc_tile(0)))
    with pytest.raises(DatasetError, match="inside the dataset folder"):
        open_paired_dataset(bci, with_mask=True, mask_cache_dir=bci / "masks")


def test_crop_larger_than_images_is_an_error(bci):
    with pytest.raises(DatasetError, match=r"2 pair\(s\) are smaller than the crop 80x80"):
        open_paired_dataset(bci, crop=80)
    with pytest.raises(DatasetError, match="no image pairs"):
        PairedDataset([])


def test_evenly_spaced_subsets_cover_the_whole_list():
    from vstain.train.datasets import evenly_spaced

    assert evenly_spaced(160, 640) == list(range(2, 640, 4))
    assert evenly_spaced(3, 3) == [0, 1, 2] and evenly_spaced(1, 9) == [4]
    picked = evenly_spaced(7, 100)
    assert len(set(picked)) == 7 and picked[0] < 100 / 7 and picked[-1] > 100 - 100 / 7
    with pytest.raises(ValueError, match="1 <= n <= 5"):
        evenly_spaced(6, 5)
