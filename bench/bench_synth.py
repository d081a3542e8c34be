"""Simulator throughput: megapixels per second of paired H&E + IHC (one MP = 1 MP of each).

python bench/bench_synth.py          # all measurements
python bench/bench_synth.py profile  # the ten most expensive functions of one paired render
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time

import dask
import numpy as np

from vstain.synth import make_spec, render_he, render_ihc, render_tile, synth_slide
from vstain.synth.dataset import tissue_tiles

SIDE = 1024
REPEATS = 3


def _tissue_region(spec, side: int) -> tuple[int, int]:
    candidates = tissue_tiles(spec, side, 0.9)
    x, y = candidates[len(candidates) // 2]
    return int(x), int(y)


def _rate(fn, megapixels: float) -> float:
    fn()  # warm up (imports, caches)
    best = np.inf
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return megapixels / best


def renders() -> None:
    mp = SIDE * SIDE / 1e6
    for mode in ("same-section", "adjacent-section"):
        spec = make_spec(0, "ck818", 8192, mode=mode)
        x, y = _tissue_region(spec, SIDE)
        pair = _rate(lambda s=spec, x=x, y=y: render_tile(s, x, y, SIDE, SIDE), mp)
        apart = _rate(
            lambda s=spec, x=x, y=y: (
                render_he(s, x, y, SIDE, SIDE),
                render_ihc(s, x, y, SIDE, SIDE),
            ),
            mp,
        )
        print(
            f"{mode}: render_tile (pair + truth) {pair:.2f} MP/s; "
            f"render_he + render_ihc {apart:.2f} MP/s  [{SIDE}x{SIDE}, 1 thread]"
        )


def streaming(threads: int) -> None:
    slide = synth_slide("ck818", 8192, seed=0, chunk=1024)
    x, y = _tissue_region(slide.spec, 2048)
    box = (slice(y, y + 2048), slice(x, x + 2048))
    with dask.config.set(scheduler="threads", num_workers=threads):
        rate = _rate(lambda: dask.compute(slide.he[box], slide.ihc[box]), 2048 * 2048 / 1e6)
    print(f"dask stream of a 2048x2048 pair (1024 chunks, {threads} threads): {rate:.2f} MP/s")


def profile() -> None:
    spec = make_spec(0, "ck818", 8192)
    x, y = _tissue_region(spec, SIDE)
    render_tile(spec, x, y, SIDE, SIDE)
    profiler = cProfile.Profile()
    profiler.runcall(render_tile, spec, x, y, SIDE, SIDE)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(10)


if __name__ == "__main__":
    if sys.argv[1:] == ["profile"]:
        profile()
    else:
        renders()
        streaming(1)
        streaming(os.cpu_count() or 1)
