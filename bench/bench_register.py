"""Registration accuracy on simulated adjacent sections with known transforms.

Each case: a simulated H&E / IHC pair (the simulator's rotation, shift, scale and elastic
deformation) with the IHC further turned by a random multiple of 90 degrees. The target
registration error (TRE) is measured at tissue points of the H&E against the true map, elastic
part included. Run: ``.venv/bin/python bench/bench_register.py --cases 20 --size 2048``.
"""

import argparse
import time

import dask.array as da
import numpy as np

from vstain.io.slide import Slide
from vstain.register import register
from vstain.synth import SectionTransform, make_spec, slide_arrays


def _case(seed: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    spec = make_spec(seed, "ck818", size, mode="adjacent-section")
    he, ihc = (np.asarray(a) for a in slide_arrays(spec))
    k = int(rng.integers(4))
    rot = np.linalg.matrix_power(np.array([[0, 1, 0], [-1, 0, size - 1], [0, 0, 1.0]]), k)
    ihc = np.ascontiguousarray(np.rot90(ihc, k))
    start = time.perf_counter()
    reg = register(Slide("he", [da.from_array(he)], 0.5), Slide("ihc", [da.from_array(ihc)], 0.5))
    seconds = time.perf_counter() - start
    ys, xs = np.mgrid[32:size:64, 32:size:64]
    tissue = he[ys, xs].mean(-1) < 215
    x, y = xs[tissue].astype(float), ys[tissue].astype(float)
    qx, qy = SectionTransform.from_spec(spec).he_to_ihc(x, y)
    truth = np.c_[qx, qy] @ rot[:2, :2].T + rot[:2, 2]
    tre = np.hypot(*(reg.he_to_ihc_points(np.c_[x, y]) - truth).T)
    print(
        f"seed {seed:3d} rot90 x{k}  TRE median {np.median(tre):6.2f} px  p90 "
        f"{np.percentile(tre, 90):6.2f} px  quality {reg.quality:.3f} ok {reg.ok}  "
        f"{seconds:5.1f} s",
        flush=True,
    )
    return tre, reg.quality, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = [_case(seed, args.size, rng) for seed in range(args.cases)]
    tre = np.concatenate([r[0] for r in results])
    medians = [float(np.median(r[0])) for r in results]
    print(
        f"overall: TRE median {np.median(tre):.2f} px, p90 {np.percentile(tre, 90):.2f} px; "
        f"worst case median {max(medians):.2f} px; mean time {np.mean([r[2] for r in results]):.1f}"
        f" s per case; quality min {min(r[1] for r in results):.3f}"
    )


if __name__ == "__main__":
    main()
