"""How well K-Stain's keypoint detector (HSKD) registers adjacent-section tiles.

For every test tile of a simulated adjacent-section dataset (``vstain synth-dataset --mode
adjacent-section``), the affine each method finds from the H&E tile to the IHC tile is compared
with the true one (the simulator's section transform in the two tiles' frames, elastic part
left out): the mean displacement of the four tile corners, in pixels. Methods: no registration
(identity), HSKD of a trained ``k-stain`` checkpoint, and the review's feature-based
``vstain.registration.register`` run on the same tile pair (failures and maps it does not trust are
counted, not scored).
Run: ``.venv/bin/python bench/bench_kstain_registration.py CKPT DATASET [--limit N]``.
"""

import argparse
from dataclasses import replace
from pathlib import Path

import dask.array as da
import numpy as np

from vstain.io.slide import Slide
from vstain.models import load_checkpoint
from vstain.registration import register
from vstain.registration.errors import RegistrationError
from vstain.train.datasets import open_paired_dataset


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]])


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    model = load_checkpoint(args.checkpoint).eval()
    test = open_paired_dataset(args.dataset, split="test")
    n = len(test) if args.limit is None else min(args.limit, len(test))
    errors: dict[str, list[float]] = {"identity": [], "hskd": [], "feature": []}
    trusted = []
    for i in range(n):
        item, pair = test[i], test.pairs[i]
        t = np.load(args.dataset / "truth" / "test" / f"{pair.name}.npz")
        x, y, ix, iy = t["origin"]
        true = _shift(-ix, -iy) @ t["affine"] @ _shift(x, y)
        h, w = item["he"].shape[-2:]
        hskd = model.correspond(item["he"][None], item["ihc"][None]).affine[0].double().numpy()
        rgb = [
            (item[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for k in ("he", "ihc")
        ]
        feature, ok = feature_affine(*rgb, model.card.pixel_size or 0.5)
        trusted.append(ok)
        errors["identity"].append(corner_error(np.eye(3), true, h, w))
        errors["hskd"].append(corner_error(hskd, true, h, w))
        errors["feature"].append(corner_error(feature, true, h, w))
    print(
        f"{n} test tiles of {args.dataset}; mean corner displacement against the true affine (px)"
    )
    for name, values in errors.items():
        v = np.asarray(values)
        print(
            f"{name:>8}: median {np.median(v):6.2f}, mean {v.mean():6.2f}, "
            f"p90 {np.percentile(v, 90):6.2f}"
        )
    ok = np.asarray(trusted)
    if ok.any():
        v = np.asarray(errors["feature"])[ok]
        print(
            f"feature registration trusted its map on {ok.sum()} of {n} tiles: "
            f"median {np.median(v):.2f} px there"
        )
    else:
        print(f"feature registration trusted its map on none of the {n} tiles")


if __name__ == "__main__":
    main()
