"""Batch staining benchmarks: LocalCluster scaling, per-tile cost and bytes per tile.

python bench/bench_batch.py scaling   # 2 single-threaded workers vs 1 worker of 2 threads (and 1x1)
python bench/bench_batch.py cost      # per-tile forward time and FLOPs (small, paper), bytes/tile
python bench/bench_batch.py           # both

Uses the shipped pix2pix demo checkpoint on textured OME-TIFF slides (every tile is tissue).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_engine import textured_slide
from vstain.batch import stain_slides
from vstain.io import write_ome_tiff
from vstain.models import create
from vstain.weights import shipped_checkpoints

SLIDE, TILE, BLOCK, SLIDES = 1536, 256, 2, 2
#: (workers, torch threads per worker)
LAYOUTS = [(1, 1), (1, 2), (2, 1)]


def write_slides(tmp: Path, n: int, size: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = tmp / f"slide{i}.ome.tif"
        write_ome_tiff(textured_slide(size + 128 * i), path, pixel_size=0.5, compression="jpeg")
        paths.append(path)
    return paths


def timed_run(slides, out: Path, workers: int, threads: int) -> dict:
    """Tiles/s of one batch on a warm LocalCluster (torch imported, model loaded once)."""
    from distributed import LocalCluster

    checkpoint = shipped_checkpoints()["pix2pix"]
    options = {"tile": TILE, "block": BLOCK, "torch_threads": threads}
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        address = cluster.scheduler_address
        stain_slides(slides[:1], checkpoint, out / "warm", scheduler=address, **options)
        summary = stain_slides(slides, checkpoint, out / "run", scheduler=address, **options)
    assert not summary.failures, summary.failures
    return {
        "workers": workers,
        "threads": threads,
        "tiles": summary.tiles,
        "seconds": round(summary.seconds, 2),
        "tiles_per_second": round(summary.tiles_per_second, 3),
    }


def scaling(tmp: Path) -> dict:
    slides = write_slides(tmp, SLIDES, SLIDE)
    runs = [timed_run(slides, tmp / f"w{w}t{t}", w, t) for w, t in LAYOUTS]
    rate = {(r["workers"], r["threads"]): r["tiles_per_second"] for r in runs}
    return {
        "runs": runs,
        "ratio_2x1_vs_1x2": round(rate[2, 1] / rate[1, 2], 3),
        "ratio_2x1_vs_1x1": round(rate[2, 1] / rate[1, 1], 3),
    }


def forward_cost(config: str, tile: int = 512, repeats: int = 3) -> dict:
    """One-thread CPU ms and GFLOPs per tile of ``tile`` px (window with the model's halo)."""
    torch.set_num_threads(1)
    model = create("pix2pix", config, tile_size=tile).eval()
    window = tile + 2 * model.card.halo
    x = torch.rand(1, 3, window, window)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as flops:
            model.predict(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict(x)
            times.append(time.perf_counter() - start)
    return {
        "config": config,
        "tile": tile,
        "window": window,
        "parameters": sum(p.numel() for p in model.generator.parameters()),
        "gflops_per_tile": round(flops.get_total_flops() / 1e9, 1),
        "cpu_ms_per_tile_1_thread": round(1000 * min(times), 1),
    }


def bytes_per_tile(tmp: Path, tile: int = 512, size: int = 3072) -> dict:
    """Compressed input (JPEG OME-TIFF level 0) and output (OME-Zarr, all levels) per tile."""
    slide = write_slides(tmp, 1, size)[0]
    out = tmp / "bytes"
    checkpoint = shipped_checkpoints()["pix2pix"]
    summary = stain_slides([slide], checkpoint, out, workers=1, torch_threads=2, tile=tile)
    tiles = summary.slides[0].tiles
    written = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {
        "tile": tile,
        "tiles": tiles,
        "input_kib_per_tile": round(slide.stat().st_size / tiles / 1024, 1),
        "output_kib_per_tile": round(written / tiles / 1024, 1),
        "seconds": round(summary.seconds, 1),
    }


def cost(tmp: Path) -> dict:
    return {
        "forward": [forward_cost("small"), forward_cost("paper", repeats=1)],
        "bytes": bytes_per_tile(tmp),
    }


def main() -> None:
    which = sys.argv[1:] or ["scaling", "cost"]
    with tempfile.TemporaryDirectory() as d:
        for name in which:
            tmp = Path(d) / name
            tmp.mkdir()
            print(json.dumps({name: globals()[name](tmp)}, indent=2), flush=True)


if __name__ == "__main__":
    main()
