"""How well K-Stain's keypoint detector (HSKD) registers adjacent-section tiles.

For every test tile of a simulated adjacent-section dataset (``vstain synth-dataset --mode
adjacent-section``), the affine each method finds from the H&E tile to the IHC tile is compared
with the true one (fitted to the simulator's cells in both sections, see ``true_tile_affine``):
the mean displacement of the four tile corners, in pixels. Methods: no registration
(identity), HSKD of a trained ``k-stain`` checkpoint, and the review's feature-based
``vstain.registration.register`` run on the same tile pair (failures and maps it does not trust are
counted, not scored). With ``--peaks``, also a detector that learns nothing: each keypoint the soft
peak of the blurred hematoxylin in its cell of an 8 x 8 grid, fitted by plain Eq. 4 and by the
Tukey-weighted fit (what the window and the robust fit do without any training).
Run: ``.venv/bin/python bench/bench_kstain_registration.py CKPT DATASET [--limit N] [--split val]
[--no-feature] [--peaks]``; it prints median, mean and p90 and the median's ratio to the identity's.
"""

import argparse
from dataclasses import replace
from pathlib import Path

import dask.array as da
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from vstain.io.slide import Slide
from vstain.models import load_checkpoint
from vstain.models.blocks.affine import (
    fit_affine,
    robust_fit_affine,
    to_normalised,
    to_pixel_affine,
)
from vstain.models.blocks.hskd import hematoxylin, window_log_prior
from vstain.models.blocks.keypoints import centre_of_mass
from vstain.registration import register
from vstain.registration.errors import RegistrationError
from vstain.train.datasets import open_paired_dataset


def corner_error(found: np.ndarray, true: np.ndarray, h: int, w: int) -> float:
    """Mean distance between the images of the tile corners under two 3 x 3 affines."""
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1.0]]).T
    return float(np.linalg.norm((found @ corners - true @ corners)[:2], axis=0).mean())


def feature_affine(he: np.ndarray, ihc: np.ndarray, pixel_size: float) -> tuple[np.ndarray, bool]:
    """The review's registration of one tile pair as a 3 x 3 affine (identity where it fails)
    and whether it trusts the map (``Registration.ok``)."""
    slides = (Slide(name, [da.from_array(a)], pixel_size) for name, a in (("he", he), ("ihc", ihc)))
    try:
        reg = replace(register(*slides), field=None)
    except RegistrationError:
        return np.eye(3), False
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]) * max(he.shape)
    dst = reg.he_to_ihc_points(src)
    a = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # 2 x 3 from three points
    return np.vstack([a, [0, 0, 1.0]]), reg.ok


#: The hand-made detector of ``--peaks``: 64 windows, blur sigma (px), logit gain, Tukey scale (px).
PEAKS = {"n": 64, "blur": 2.0, "gain": 80.0, "robust_px": 3.0}


def peak_keypoints(image: torch.Tensor) -> torch.Tensor:
    """1 x N x 2 keypoints of a 1 x 3 x H x W image in [0, 1]: in each cell of the 8 x 8 grid, the
    soft peak of its hematoxylin blurred by ``PEAKS["blur"]`` px (the nuclei)."""
    h = gaussian_filter(hematoxylin(image * 2 - 1)[0, 0].numpy(), PEAKS["blur"])
    logits = PEAKS["gain"] * torch.from_numpy(h)[None, None]
    return centre_of_mass(logits + window_log_prior(PEAKS["n"], h.shape, logits), 1)


def peak_affines(he: torch.Tensor, ihc: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The ``--peaks`` detector's affine (tile pixels) by plain Eq. 4 and by the robust fit."""
    size = he.shape[-2:]
    src, dst = (to_normalised(peak_keypoints(x[None]), size) for x in (he, ihc))
    plain = fit_affine(src, dst, 1e-2)
    robust = robust_fit_affine(src, dst, 1e-2, PEAKS["robust_px"] * 2 / max(size))
    return tuple(to_pixel_affine(a, size)[0].double().numpy() for a in (plain, robust))


def true_tile_affine(root: Path, split: str, name: str) -> np.ndarray:
    """The true H&E -> IHC affine of a tile pair, in the two tiles' pixels: the least-squares
    affine taking the simulator's cells present in both sections from their H&E to their IHC
    tile positions (the section transform with its elastic part; residual about 0.5 px). The
    slide's affine alone, ``T(-ix, -iy) @ affine @ T(x, y)``, leaves out the elastic part's shift
    and tilt inside the tile, a median 5.6 px at the corners on the ck818 test tiles."""
    t = np.load(root / "truth" / split / f"{name}.npz")
    both = t["cell_in_he"] & t["cell_in_ihc"]
    he = np.stack([t["cell_x"][both], t["cell_y"][both], np.ones(both.sum())], axis=1)
    ihc = np.stack([t["cell_ihc_x"][both], t["cell_ihc_y"][both]], axis=1)
    if len(he) < 6:
        raise ValueError(f"{name}: {len(he)} cells in both sections, too few for an affine")
    rows = np.linalg.lstsq(he, ihc, rcond=None)[0].T
    return np.vstack([rows, [0, 0, 1.0]])


def registration_errors(
    model, root: Path, split: str, limit: int | None, feature: bool = True, peaks: bool = False
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Corner errors (px) per tile of identity, HSKD, (with ``peaks``) the hand-made detector's
    plain and robust fits and (with ``feature``) the review's registration, and whether the
    latter trusted its map, on the first ``limit`` pairs."""
    data = open_paired_dataset(root, split=split)
    n = len(data) if limit is None else min(limit, len(data))
    methods = ["identity", "hskd", *(["peaks", "peaks+tukey"] if peaks else [])]
    methods += ["feature"] if feature else []
    errors: dict[str, list[float]] = {name: [] for name in methods}
    trusted = []
    for i in range(n):
        item, pair = data[i], data.pairs[i]
        true = true_tile_affine(root, split, pair.name)
        h, w = item["he"].shape[-2:]
        hskd = model.correspond(item["he"][None], item["ihc"][None]).affine[0].double().numpy()
        errors["identity"].append(corner_error(np.eye(3), true, h, w))
        errors["hskd"].append(corner_error(hskd, true, h, w))
        if peaks:
            plain, robust = peak_affines(item["he"], item["ihc"])
            errors["peaks"].append(corner_error(plain, true, h, w))
            errors["peaks+tukey"].append(corner_error(robust, true, h, w))
        if feature:
            rgb = [
                (item[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                for k in ("he", "ihc")
            ]
            found, ok = feature_affine(*rgb, model.card.pixel_size or 0.5)
            trusted.append(ok)
            errors["feature"].append(corner_error(found, true, h, w))
    return {k: np.asarray(v) for k, v in errors.items()}, np.asarray(trusted, bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--split", default="test", help="test (default) or val")
    parser.add_argument(
        "--no-feature", action="store_true", help="skip the review's registration (slow)"
    )
    parser.add_argument("--peaks", action="store_true", help="add the hand-made detector")
    args = parser.parse_args()
    model = load_checkpoint(args.checkpoint).eval()
    errors, trusted = registration_errors(
        model, args.dataset, args.split, args.limit, not args.no_feature, args.peaks
    )
    n = len(errors["identity"])
    print(
        f"{n} {args.split} tiles of {args.dataset}; mean corner displacement against the true "
        "affine (px); ratio = median / the identity's median"
    )
    reference = np.median(errors["identity"])
    for name, v in errors.items():
        print(
            f"{name:>11}: median {np.median(v):6.2f}, mean {v.mean():6.2f}, "
            f"p90 {np.percentile(v, 90):6.2f}, ratio {np.median(v) / reference:5.2f}"
        )
    if args.no_feature:
        return
    if trusted.any():
        v = errors["feature"][trusted]
        print(
            f"feature registration trusted its map on {trusted.sum()} of {n} tiles: "
            f"median {np.median(v):.2f} px there"
        )
    else:
        print(f"feature registration trusted its map on none of the {n} tiles")


if __name__ == "__main__":
    main()
