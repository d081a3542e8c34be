"""Registration accuracy on simulated adjacent sections with known transforms.

Each case: a simulated H&E / IHC pair whose sectioning is redrawn harder than the simulator's
default (rotation up to 15 degrees, shift up to 10 % of the width, scale 0.9-1.1, plus its
elastic deformation), with the IHC further turned by a random multiple of 90 degrees. The target
registration error (TRE) is measured at H&E tissue points whose true IHC position lies on the
IHC, against the true map, elastic part included, for the coarse similarity, the refined affine
map and the refined map with the optical-flow field.
Run: ``.venv/bin/python bench/bench_register.py --cases 20 --size 2048``.
"""

import argparse
import time
from dataclasses import replace

import dask.array as da
import numpy as np

from vstain.io.slide import Slide
from vstain.registration import register
from vstain.synth import SectionTransform, SlideSpec, make_spec, slide_arrays

STAGES = ("coarse", "affine", "flow")


def hard_spec(seed: int, size: int) -> SlideSpec:
    """The simulator's adjacent-section spec with rotation, shift and scale redrawn wider."""
    spec = make_spec(seed, "ck818", size, mode="adjacent-section")
    rng = np.random.default_rng([seed, 10])
    limit = 0.1 * size * spec.pixel_size / np.sqrt(2)  # shift length up to 10 % of the width
    sectioning = replace(
        spec.sectioning,
        rotation_deg=float(rng.uniform(-15, 15)),
        shift_um=tuple(float(v) for v in rng.uniform(-limit, limit, 2)),
        scale=float(rng.uniform(0.9, 1.1)),
    )
    return replace(spec, sectioning=sectioning)


def _truth(spec: SlideSpec, he: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """H&E tissue points and their true IHC positions (after ``k`` turns), on the IHC only."""
    size = spec.width
    ys, xs = np.mgrid[32:size:64, 32:size:64]
    tissue = he[ys, xs].mean(-1) < 215
    x, y = xs[tissue].astype(float), ys[tissue].astype(float)
    q = np.c_[SectionTransform.from_spec(spec).he_to_ihc(x, y)]
    rot = np.linalg.matrix_power(np.array([[0, 1, 0], [-1, 0, size - 1], [0, 0, 1.0]]), k)
    q = q @ rot[:2, :2].T + rot[:2, 2]
    inside = ((q >= 0) & (q <= size - 1)).all(1)
    return np.c_[x, y][inside], q[inside]


def _case(seed: int, size: int, rng: np.random.Generator) -> dict:
    spec = hard_spec(seed, size)
    he, ihc = (np.asarray(a) for a in slide_arrays(spec))
    k = int(rng.integers(4))
    ihc = np.ascontiguousarray(np.rot90(ihc, k))
    slides = Slide("he", [da.from_array(he)], 0.5), Slide("ihc", [da.from_array(ihc)], 0.5)
    start = time.perf_counter()
    coarse = register(*slides, refine=False)
    middle = time.perf_counter()
    full = register(*slides, flow=True)
    seconds = time.perf_counter() - middle
    p, truth = _truth(spec, he, k)
    maps = {"coarse": coarse, "affine": replace(full, field=None), "flow": full}
    tre = {s: np.hypot(*(maps[s].he_to_ihc_points(p) - truth).T) for s in STAGES}
    s = spec.sectioning
    print(
        f"seed {seed:3d} rot {s.rotation_deg:6.1f} + {90 * k:3d} deg, scale {s.scale:.3f}, "
        f"elastic {s.elastic_um:.1f} um | TRE median / p90 px: "
        + "  ".join(
            f"{n} {np.median(tre[n]):5.2f} / {np.percentile(tre[n], 90):5.2f}" for n in STAGES
        )
        + f" | quality {full.quality:.3f} agreement {full.agreement:.2f} ok {full.ok} | "
        f"coarse {middle - start:4.1f} s, full {seconds:4.1f} s",
        flush=True,
    )
    return {"tre": tre, "ok": full.ok, "seconds": seconds, "coarse_seconds": middle - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = [_case(seed, args.size, rng) for seed in range(args.cases)]
    ok = [r for r in results if r["ok"]]
    print(f"{len(ok)} of {len(results)} cases ok (the others are flagged by their quality)")
    if not ok:
        return
    for name in STAGES:
        tre = np.concatenate([r["tre"][name] for r in ok])
        worst = max(float(np.median(r["tre"][name])) for r in ok)
        print(
            f"{name:>6}: TRE median {np.median(tre):.2f} px, p90 {np.percentile(tre, 90):.2f} px,"
            f" worst case median {worst:.2f} px (ok cases, full resolution)"
        )
    print(
        f"seconds per case: {np.mean([r['seconds'] for r in results]):.1f} (register with flow), "
        f"{np.mean([r['coarse_seconds'] for r in results]):.1f} (coarse only)"
    )


if __name__ == "__main__":
    main()
