"""Paired H&E / IHC image datasets for training: BCI, MIST and plain folders of pairs.

Layouts (``root`` is the folder given to ``open_paired_dataset``):

- ``bci``: ``root/HE/<split>/*`` and ``root/IHC/<split>/*``; split ``train`` (default) or ``test``.
- ``mist``: ``root/<marker>/TrainValAB/{trainA,trainB,valA,valB}/`` (A = H&E, B = IHC); split
  ``train`` (default) or ``val``. ``root`` may also be a marker folder (holding ``TrainValAB``).
- ``folder``: ``root/he/*`` and ``root/ihc/*``, or ``root/he/<split>/*`` and ``root/ihc/<split>/*``
  when a split is given.

An H&E and an IHC image are partners when their file names have the same stem (``a.png`` and
``a.tif`` pair up). Images are files ending in .png, .jpg, .jpeg, .tif, .tiff or .bmp (any case);
other and hidden files are ignored.

Randomness: item ``i`` in epoch ``e`` draws from ``numpy.random.default_rng([seed, e, i])``, in
this order: the crop window (when ``crop`` is set), then, when ``augment`` is set, the number of
quarter turns (0-3, or 0/2 for non-square crops), a horizontal flip, and the H&E stain scale and
shift. So an item depends only on (seed, epoch, index), in any worker. Call ``set_epoch`` before
each epoch; DataLoader workers copy the dataset when an iterator starts, so with
``persistent_workers=True`` the epoch seen by workers does not change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import imageio.v3 as iio
import numpy as np
import torch
from torch.utils.data import Dataset

from vstain.color.dab import dab_od
from vstain.color.dab_mask import (
    MASK_K,
    MASK_MAX_HOLE,
    MASK_MIN_SIZE,
    DabStats,
    coarse_dab_mask,
)
from vstain.color.pixels import sample_pixels
from vstain.color.stain_augment import perturb_stains, random_he_perturbation
from vstain.color.stain_normalisation import stain_reference
from vstain.errors import DatasetError
from vstain.io.pixels import check_channels, rgb_uint8

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
#: How many offending file names an error message lists.
SHOWN = 5
#: Dataset-level DAB statistics use this many IHC images and pixels per image at most.
STATS_IMAGES, STATS_PIXELS_PER_IMAGE = 32, 20_000

Layout = Literal["auto", "bci", "mist", "folder"]


@dataclass(frozen=True)
class Pair:
    """One H&E image, its IHC partner, their common stem and (height, width)."""

    name: str
    he: Path
    ihc: Path
    shape: tuple[int, int]


@dataclass(frozen=True)
class Transform:
    """Random choices for one item: crop corner, quarter turns, flip, H&E stain scale and shift."""

    y0: int
    x0: int
    turns: int = 0
    flip: bool = False
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _listed(names: Sequence[str]) -> str:
    names = sorted(names)
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def list_images(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem; raise DatasetError if none, or if two share a stem."""
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder. Check the dataset root and its layout.")
    images: dict[str, Path] = {}
    clashes = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in images:
            clashes.append(path.name)
        images[path.stem] = path
    if clashes:
        raise DatasetError(
            f"{folder} has several images with the same name stem: {_listed(clashes)}. "
            "Keep one file per stem (pairs are matched by stem)."
        )
    if not images:
        raise DatasetError(
            f"{folder} holds no images (.png, .jpg, .tif, .bmp). Put the images there or "
            "point to the right folder."
        )
    return images


def image_shape(path: Path) -> tuple[int, int]:
    """(height, width) of an RGB(A) image file, read from its header."""
    try:
        shape = iio.improps(path).shape
    except (OSError, ValueError) as e:
        raise DatasetError(f"Cannot read {path} ({e}). Replace or remove the file.") from e
    check_channels(shape[2] if len(shape) == 3 else 1, path)  # refuse grayscale before training
    return tuple(shape[:2])


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), by the rules of ``vstain.io.pixels``."""
    try:
        image = iio.imread(path)
    except (OSError, ValueError) as e:
        raise DatasetError(f"Cannot read {path} ({e}). Replace or remove the file.") from e
    return rgb_uint8(image if image.ndim == 3 else image[..., None], path)


def match_pairs(he_dir: Path, ihc_dir: Path) -> list[Pair]:
    """Pairs of same-stem, same-size images of ``he_dir`` and ``ihc_dir``, sorted by stem."""
    he, ihc = list_images(he_dir), list_images(ihc_dir)
    problems = []
    if no_ihc := he.keys() - ihc.keys():
        problems.append(
            f"{len(no_ihc)} H&E image(s) in {he_dir} have no IHC partner in {ihc_dir}: "
            f"{_listed(no_ihc)}"
        )
    if no_he := ihc.keys() - he.keys():
        problems.append(
            f"{len(no_he)} IHC image(s) in {ihc_dir} have no H&E partner in {he_dir}: "
            f"{_listed(no_he)}"
        )
    if problems:
        raise DatasetError(
            "; ".join(problems) + ". Every H&E image needs an IHC image with the same name "
            "(stem) and vice versa: add the missing partners or remove the unpaired files."
        )
    pairs, mismatched = [], []
    for name in sorted(he):
        shape, ihc_shape = image_shape(he[name]), image_shape(ihc[name])
        if shape != ihc_shape:
            (h, w), (ih, iw) = shape, ihc_shape
            mismatched.append(f"{name} (H&E {w}x{h}, IHC {iw}x{ih})")
        pairs.append(Pair(name, he[name], ihc[name], shape))
    if mismatched:
        raise DatasetError(
            f"{len(mismatched)} pair(s) in {he_dir} and {ihc_dir} differ in size: "
            f"{_listed(mismatched)}. The H&E and IHC images of a pair must be the same size: "
            "register and crop them to the same grid, or remove those pairs."
        )
    return pairs


def mist_markers(root: Path) -> list[str]:
    """Names of the subfolders of ``root`` that hold a MIST ``TrainValAB`` folder."""
    return sorted(p.name for p in root.iterdir() if (p / "TrainValAB").is_dir())


def detect_layout(root: Path) -> Literal["bci", "mist", "folder"]:
    """The layout of a dataset folder (see the module docstring)."""
    if (root / "HE").is_dir() and (root / "IHC").is_dir():
        return "bci"
    if (root / "he").is_dir() and (root / "ihc").is_dir():
        return "folder"
    if (root / "TrainValAB").is_dir() or mist_markers(root):
        return "mist"
    raise DatasetError(
        f"{root} is not a paired dataset in a known layout. Expected HE/ and IHC/ (BCI), "
        "<marker>/TrainValAB/ (MIST), or he/ and ihc/ (a folder of pairs)."
    )


def _check_split(split: str, allowed: tuple[str, ...], layout: str) -> None:
    if split not in allowed:
        raise DatasetError(
            f"The {layout} layout has no split {split!r}; use one of {', '.join(allowed)}."
        )


def mist_marker_dir(root: Path, marker: str | None) -> Path:
    """The MIST folder of ``marker`` (``root`` itself when it holds ``TrainValAB``)."""
    if (root / "TrainValAB").is_dir():
        return root
    markers = mist_markers(root)
    if marker is None:
        if len(markers) == 1:
            return root / markers[0]
        raise DatasetError(
            f"{root} holds MIST data for several markers ({', '.join(markers)}): choose one "
            "with marker=..."
        )
    if marker not in markers:
        raise DatasetError(
            f"{root} has no MIST marker {marker!r} (it has {', '.join(markers) or 'none'})."
        )
    return root / marker


def layout_dirs(
    root: Path, layout: str, split: str | None, marker: str | None
) -> tuple[Path, Path]:
    """The H&E and IHC folders of ``split`` in a dataset of ``layout``."""
    if layout == "bci":
        split = split or "train"
        _check_split(split, ("train", "val", "test"), "BCI")
        return root / "HE" / split, root / "IHC" / split
    if layout == "mist":
        split = split or "train"
        _check_split(split, ("train", "val"), "MIST")
        base = mist_marker_dir(root, marker) / "TrainValAB"
        return base / f"{split}A", base / f"{split}B"
    if layout == "folder":
        sub = Path(split) if split else Path()
        return root / "he" / sub, root / "ihc" / sub
    raise DatasetError(f"Unknown layout {layout!r}; use auto, bci, mist or folder.")


def evenly_spaced(n: int, total: int) -> list[int]:
    """``n`` of the indices ``0 .. total - 1``, spread evenly over the whole range.

    Pairs are listed slide by slide, so a spread subset keeps every slide (the first ``n`` would
    keep only the first slides): the training subsets of dataset-size ablations.
    """
    if not 1 <= n <= total:
        raise ValueError(f"need 1 <= n <= {total}, got {n}")
    return [(2 * i + 1) * total // (2 * n) for i in range(n)]


def dataset_dab_stats(pairs: Sequence[Pair], seed: int = 0) -> DabStats:
    """DAB mean and std over up to ``STATS_IMAGES`` IHC images of ``pairs``, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pairs), min(len(pairs), STATS_IMAGES), replace=False)
    pixels = np.concatenate(
        [
            sample_pixels(read_rgb(pairs[i].ihc), max_pixels=STATS_PIXELS_PER_IMAGE, seed=seed)
            for i in sorted(chosen)
        ]
    )
    return DabStats.of(dab_od(pixels))


def dataset_stain_reference(pairs: Sequence[Pair], seed: int = 0) -> dict[str, dict]:
    """Stain statistics of up to ``STATS_IMAGES`` H&E images of ``pairs`` (drawn with ``seed``),
    keyed by method: the ``stain_reference`` of a model card trained on them."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pairs), min(len(pairs), STATS_IMAGES), replace=False)
    images = (read_rgb(pairs[i].he) for i in sorted(chosen))
    return stain_reference(images, pixels_per_image=STATS_PIXELS_PER_IMAGE, seed=seed)


def random_augmentation(rng: np.random.Generator, square: bool) -> dict:
    """Random quarter turns (half turns unless ``square``), flip and H&E stain perturbation, as
    keyword arguments of `Transform`."""
    turns = int(rng.integers(0, 4)) if square else 2 * int(rng.integers(0, 2))
    flip = bool(rng.integers(0, 2))
    scale, shift = random_he_perturbation(rng)
    return {
        "turns": turns,
        "flip": flip,
        "scale": tuple(map(float, scale)),
        "shift": tuple(map(float, shift)),
    }


def augment_pair(he: np.ndarray, ihc: np.ndarray, t: Transform) -> tuple[np.ndarray, np.ndarray]:
    """``t``'s stain perturbation of the H&E, then its turns and flip of both images."""
    if t.scale != (1.0, 1.0, 1.0) or t.shift != (0.0, 0.0, 0.0):
        he = perturb_stains(he, np.array(t.scale), np.array(t.shift))
    return _geometry(he, t), _geometry(ihc, t)


def _geometry(image: np.ndarray, t: Transform) -> np.ndarray:
    image = np.rot90(image, t.turns, axes=(0, 1))
    return image[:, ::-1] if t.flip else image


def _chw(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 or bool -> C x H x W float32 in [0, 1]."""
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32) / scale)


class PairedDataset(Dataset):
    """Paired H&E / IHC images as dicts of "he", "ihc" (3 x H x W float32 in [0, 1]), "name",
    and with ``with_mask`` "mask" (1 x H x W float32, 1 = coarse DAB-positive in the IHC).

    Parameters
    ----------
    pairs
        The image pairs, e.g. from ``match_pairs``.
    crop
        Size (h, w) or side of a random window cut from both images; None keeps whole images.
    augment
        Random quarter turns and flips (same on both) and H&E stain jitter (H&E only).
    with_mask, mask_stats
        Add the coarse DAB mask of the IHC. It is thresholded with ``mask_stats``:
        ``"dataset"`` (default) the DAB mean and std of up to 32 IHC images of the dataset,
        ``"image"`` each image's own, or given ``DabStats``.
    seed
        Seed of all random choices (see the module docstring).
    mask_cache_dir
        Optional folder for masks on disk (never inside the dataset's folder); masks are always
        cached in memory, per worker process.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        *,
        crop: int | tuple[int, int] | None = None,
        augment: bool = False,
        with_mask: bool = False,
        mask_stats: Literal["dataset", "image"] | DabStats = "dataset",
        seed: int = 0,
        mask_cache_dir: str | Path | None = None,
    ):
        if not pairs:
            raise DatasetError("The dataset has no image pairs.")
        self.pairs = list(pairs)
        self.crop = self._check_crop(crop)
        self.augment = augment
        self.with_mask = with_mask
        self.seed = seed
        self.epoch = 0
        self.mask_stats = self._resolve_stats(mask_stats) if with_mask else None
        self.mask_cache_dir = self._check_cache_dir(mask_cache_dir)
        self._masks: dict[str, tuple[np.ndarray, tuple[int, int]]] = {}

    def _check_crop(self, crop: int | tuple[int, int] | None) -> tuple[int, int] | None:
        if crop is None:
            return None
        size = (crop, crop) if isinstance(crop, int) else tuple(crop)
        if len(size) != 2 or min(size) < 1:
            raise DatasetError(f"crop must be a positive size (h, w) or side, got {crop}.")
        small = [p.name for p in self.pairs if p.shape[0] < size[0] or p.shape[1] < size[1]]
        if small:
            raise DatasetError(
                f"{len(small)} pair(s) are smaller than the crop {size[0]}x{size[1]}: "
                f"{_listed(small)}. Choose a smaller crop or remove those images."
            )
        return size

    def _resolve_stats(self, mask_stats: Literal["dataset", "image"] | DabStats) -> DabStats | None:
        if isinstance(mask_stats, DabStats):
            return mask_stats
        if mask_stats == "dataset":
            return dataset_dab_stats(self.pairs, self.seed)
        if mask_stats == "image":
            return None
        raise DatasetError(f"mask_stats must be 'dataset', 'image' or a DabStats: {mask_stats!r}.")

    def _check_cache_dir(self, cache_dir: str | Path | None) -> Path | None:
        if cache_dir is None:
            return None
        cache_dir = Path(cache_dir).resolve()
        files = [f.resolve() for p in self.pairs for f in (p.he, p.ihc)]
        data_dir = Path(os.path.commonpath(files))
        if cache_dir.is_relative_to(data_dir):
            raise DatasetError(
                f"The mask cache {cache_dir} is inside the dataset folder {data_dir}; vstain does "
                "not write into datasets. Choose a cache folder elsewhere."
            )
        stats = self.mask_stats
        key = "image" if stats is None else f"mu{stats.mean:.6f}-sd{stats.std:.6f}"
        return cache_dir / f"dab-k{MASK_K}-min{MASK_MIN_SIZE}-hole{MASK_MAX_HOLE}-{key}"

    def set_epoch(self, epoch: int) -> None:
        """Use the random choices of ``epoch`` from now on."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def transform(self, index: int) -> Transform:
        """The random choices of item ``index`` in the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        h, w = self.pairs[index].shape
        ch, cw = self.crop or (h, w)
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        if not self.augment:
            return Transform(y0, x0)
        return Transform(y0, x0, **random_augmentation(rng, ch == cw))

    def mask(self, index: int, ihc: np.ndarray | None = None) -> np.ndarray:
        """Coarse DAB mask (H, W) bool of the whole IHC image of pair ``index``, cached."""
        if not self.with_mask:
            raise DatasetError("This dataset was opened without masks: pass with_mask=True.")
        pair = self.pairs[index]
        if pair.name in self._masks:
            bits, shape = self._masks[pair.name]
            return np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        path = None if self.mask_cache_dir is None else self.mask_cache_dir / f"{pair.name}.png"
        if path is not None and path.is_file():
            mask = iio.imread(path) > 0
            if mask.shape != pair.shape:
                raise DatasetError(
                    f"The cached mask {path} does not match the size of {pair.ihc}. "
                    f"Delete the cache folder {path.parent} and run again."
                )
        else:
            ihc = read_rgb(pair.ihc) if ihc is None else ihc
            mask = coarse_dab_mask(
                ihc, k=MASK_K, min_size=MASK_MIN_SIZE, max_hole=MASK_MAX_HOLE, stats=self.mask_stats
            )
            if path is not None:
                _write_png_atomically(path, mask)
        self._masks[pair.name] = (np.packbits(mask), mask.shape)
        return mask

    def use_masks(self, masks: dict[str, np.ndarray]) -> None:
        """Use these (H, W) bool masks, by pair name, instead of thresholding (e.g. refined ones);
        every pair needs one of its size."""
        if not self.with_mask:
            raise DatasetError("This dataset was opened without masks: pass with_mask=True.")
        wrong = [p.name for p in self.pairs if np.shape(masks.get(p.name)) != p.shape]
        if wrong:
            raise DatasetError(
                f"No mask of the image's size for {len(wrong)} pair(s): {_listed(wrong)}."
            )
        self._masks = {
            p.name: (np.packbits(masks[p.name].astype(bool)), p.shape) for p in self.pairs
        }

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        he, ihc = read_rgb(pair.he), read_rgb(pair.ihc)
        if he.shape != ihc.shape or he.shape[:2] != pair.shape:
            raise DatasetError(
                f"{pair.he} or {pair.ihc} changed size since the dataset was opened. "
                "Open the dataset again."
            )
        t = self.transform(index)
        ch, cw = self.crop or pair.shape
        window = np.s_[t.y0 : t.y0 + ch, t.x0 : t.x0 + cw]
        he_crop, ihc_crop = augment_pair(he[window], ihc[window], t)
        item = {"he": _chw(he_crop), "ihc": _chw(ihc_crop), "name": pair.name}
        if self.with_mask:
            item["mask"] = _chw(_geometry(self.mask(index, ihc)[window][..., None], t))
        return item


def _write_png_atomically(path: Path, mask: np.ndarray) -> None:
    """Write ``mask`` as a 0/255 PNG so that readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    iio.imwrite(tmp, mask.astype(np.uint8) * 255)
    os.replace(tmp, path)


def open_paired_dataset(
    root: str | Path,
    *,
    layout: Layout = "auto",
    split: str | None = None,
    marker: str | None = None,
    crop: int | tuple[int, int] | None = None,
    augment: bool = False,
    with_mask: bool = False,
    seed: int = 0,
    mask_stats: Literal["dataset", "image"] | DabStats = "dataset",
    mask_cache_dir: str | Path | None = None,
) -> PairedDataset:
    """Open a paired H&E / IHC dataset in the BCI, MIST or folder layout.

    ``layout="auto"`` detects it; ``split`` defaults to ``train`` for BCI and MIST and to the
    flat folders for the folder layout; ``marker`` picks a MIST marker when several are present.
    The other arguments are those of ``PairedDataset``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder. Give the folder that holds the dataset.")
    kind = detect_layout(root) if layout == "auto" else layout
    he_dir, ihc_dir = layout_dirs(root, kind, split, marker)
    return PairedDataset(
        match_pairs(he_dir, ihc_dir),
        crop=crop,
        augment=augment,
        with_mask=with_mask,
        mask_stats=mask_stats,
        seed=seed,
        mask_cache_dir=mask_cache_dir,
    )


class MarkerDataset(Dataset):
    """Uniplex pairs of several markers as one dataset; each item also carries ``"marker"``, the
    index of the dataset it came from (e.g. one ``PairedDataset`` per marker folder), as the
    multi-stain models train on it."""

    def __init__(self, datasets: Sequence[Dataset]):
        if not datasets or not all(len(d) for d in datasets):
            raise DatasetError("MarkerDataset needs one non-empty dataset per marker.")
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch on to every marker's dataset that takes it."""
        for data in self.datasets:
            if hasattr(data, "set_epoch"):
                data.set_epoch(epoch)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict:
        marker = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return {**self.datasets[marker][index - int(self.offsets[marker])], "marker": marker}
