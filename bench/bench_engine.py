"""Tile engine benchmarks: throughput against the I/O floor, a GPU stand-in, pipeline efficiency,
memory flat in slide size, seams.

python bench/bench_engine.py throughput   # null model through the engine vs one-thread I/O floor
python bench/bench_engine.py standin      # 15 ms/tile GIL-free stand-in model: engine / own rate
python bench/bench_engine.py efficiency   # engine tiles/s vs raw model forward tiles/s
python bench/bench_engine.py memory       # peak RSS, 5000^2, 10000^2, 20000^2 pyramidal TIFF
python bench/bench_engine.py seams        # seam metric, crop vs feather, halo vs no halo
python bench/bench_engine.py instances    # joining objects cut by tile borders vs the tile run
python bench/bench_engine.py              # all six
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
import torch

from vstain.io import downsample_2x, open_slide, write_ome_tiff
from vstain.io.tiff_tiles import tiff_tiles
from vstain.tiles import OutputSpec, OutputStore, TileGrid, run_tiles, stain_level
from vstain.tiles.instances import border_pairs, merged_ids
from vstain.tiles.seams import seam_metric

IHC = OutputSpec("ihc", "rgb", 3, background=1.0)


def textured_slide(size: int, chunk: int = 512) -> da.Array:
    """A lazy RGB texture with tissue-like structure at many scales (no two tiles alike)."""

    def block(block_info=None):
        (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        v = (
            np.sin(xx / 7.0) * np.cos(yy / 11.0)
            + np.sin((xx + yy) / 53.0)
            + 0.5 * np.sin(np.hypot(xx - size / 2, yy - size / 3) / 29.0)
        )
        r = 200 - 40 * v
        return (
            np.stack([r, r - 60 + 20 * np.sin(xx / 17.0), 210 + 10 * v], -1)
            .clip(0, 255)
            .astype(np.uint8)
        )

    return da.map_blocks(
        block,
        dtype=np.uint8,
        chunks=((chunk,) * (size // chunk) + ((size % chunk,) if size % chunk else ()),) * 2
        + ((3,),),
    )


class ConvNet(torch.nn.Module):
    """A translation-equivariant CNN whose output keeps the input's structure (so seams would
    show); ``width`` and ``depth`` set its cost per tile and its receptive-field radius (depth)."""

    def __init__(self, width: int, depth: int = 4):
        super().__init__()
        torch.manual_seed(0)
        layers, c = [], 3
        for _ in range(depth - 1):
            layers += [torch.nn.Conv2d(c, width, 3, padding=1), torch.nn.ReLU()]
            c = width
        layers += [torch.nn.Conv2d(c, 3, 3, padding=1), torch.nn.Tanh()]
        self.net = torch.nn.Sequential(*layers)
        self.radius = depth

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> dict:
        x = torch.from_numpy(batch)
        return {"ihc": (x + 0.3 * self.net(x)).clamp(0, 1)}


def _forward_rate(model, windows: list[np.ndarray], batch: int) -> float:
    """Raw model throughput (tiles/s) over ``windows`` already in memory, batched and laid out
    as the engine lays them out ((B, 3, H, W) strided over (B, H, W, 3) memory)."""
    batches = [
        np.stack(windows[i : i + batch]).astype(np.float32).transpose(0, 3, 1, 2) / 255
        for i in range(0, len(windows), batch)
    ]
    model(batches[0])
    t0 = time.perf_counter()
    for b in batches:
        model(b)
    return len(windows) / (time.perf_counter() - t0)


def _overhead_cpu_ms(slide, tmp: Path, tile: int, halo: int, batch: int) -> float:
    """CPU time per tile the engine itself costs (read, stitch, write), with a model that sleeps:
    what it takes away from a CPU model, independent of how busy the machine is."""

    def sleeping(b):
        time.sleep(0.05 * len(b))
        return {"ihc": b}

    c0 = time.process_time()
    result = stain_level(
        slide,
        sleeping,
        tmp / "overhead.zarr",
        specs=[IHC],
        tile=tile,
        halo=halo,
        batch_size=batch,
        min_tissue=0,
    )
    return 1000 * (time.process_time() - c0) / result.computed


def efficiency(tmp: Path) -> dict:
    """Engine throughput / raw forward throughput on the same tiles, for models of two costs
    (the smaller at >= 50 ms per tile on this CPU).

    The raw rate runs the model over the very windows the engine reads (decoded beforehand), once
    before and once after the engine run; the faster is kept, so a busy machine can only make the
    ratio look worse.
    """
    from vstain.tiles import TileGrid, read_window

    path = tmp / "eff.ome.tif"
    write_ome_tiff(textured_slide(3072), path, pixel_size=0.5, compression="jpeg")
    slide = open_slide(path)
    tile, halo, batch = 256, 4, 4
    grid = TileGrid(slide.shape, tile, halo)
    level = np.asarray(slide.levels[0])
    windows = [read_window(level, t.window) for t in grid.tiles()]
    out = {"engine_cpu_ms_per_tile_without_model": _overhead_cpu_ms(slide, tmp, tile, halo, batch)}
    for width in (64, 128):
        model = ConvNet(width=width)
        before = _forward_rate(model, windows, batch)
        result = stain_level(
            slide,
            model,
            tmp / f"eff{width}.zarr",
            specs=[IHC],
            tile=tile,
            halo=halo,
            batch_size=batch,
            min_tissue=0,
        )
        forward = max(before, _forward_rate(model, windows, batch))
        out[f"width_{width}"] = {
            "ms_per_tile_forward": 1000 / forward,
            "engine_tiles_per_s": result.tiles_per_second,
            "tiles": result.computed,
            "efficiency_ratio": result.tiles_per_second / forward,
        }
    return out


def _null_model(batch: np.ndarray) -> dict:
    """Returns its uint8 input as the IHC: the engine's own cost, nothing else."""
    return {"ihc": batch.transpose(0, 3, 1, 2)}


_null_model.uint8_input = True


def _standin_model(ms_per_tile: float):
    """A stand-in for a GPU model: sleeps ``ms_per_tile`` per tile (the GIL released, as while
    a GPU computes) and returns its uint8 input."""

    def model(batch: np.ndarray) -> dict:
        time.sleep(ms_per_tile / 1000 * len(batch))
        return {"ihc": batch.transpose(0, 3, 1, 2)}

    model.uint8_input = True
    return model


def _slide_8192(tmp: Path):
    path = tmp / "s8192.ome.tif"
    if not path.exists():
        write_ome_tiff(textured_slide(8192), path, pixel_size=0.5, compression="jpeg")
    return open_slide(path)


def io_floor(slide, tmp: Path) -> tuple[float, float]:
    """MP/s of the I/O a tile run cannot avoid, on one thread: decode every source JPEG tile,
    zstd-encode its RGBA output chunk and the chunk's 2x pyramid share, write each to a file.
    Returns (MP/s, CPU ms per 512 px tile)."""
    from numcodecs import Zstd

    tiles, zstd = tiff_tiles(slide, 0), Zstd(level=0)  # zarr's default codec
    out = tmp / "floor"
    out.mkdir(exist_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(len(tiles.chunks[0])):
        for j in range(len(tiles.chunks[1])):
            rgb = tiles.read(i, j)
            rgba = np.empty((4, *rgb.shape[:2]), np.uint8)
            rgba[:3], rgba[3] = rgb.transpose(2, 0, 1), 255
            (out / f"{i}.{j}").write_bytes(zstd.encode(rgba))
            (out / f"{i}.{j}.1").write_bytes(zstd.encode(downsample_2x(rgba)))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    count = len(tiles.chunks[0]) * tiles.across
    return slide.shape[0] * slide.shape[1] / 1e6 / seconds, 1000 * cpu / count


def _engine_mps(
    slide, model, store: Path, tile: int, batch: int = 8, min_tissue: float = 0
) -> tuple[float, dict]:
    """MP/s of a run over the whole slide (``min_tissue`` above 1: every tile background)."""
    c0, t0 = time.process_time(), time.perf_counter()
    result = stain_level(
        slide,
        model,
        store,
        specs=[IHC],
        tile=tile,
        halo=16,
        batch_size=batch,
        min_tissue=min_tissue,
    )
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    tiles = result.computed + result.background
    info = {
        "tiles": tiles,
        "tiles_per_s": round(tiles / seconds, 1),
        "cpu_s_per_wall_s": round(cpu / seconds, 2),
        "cpu_ms_per_512px": round(1000 * cpu / tiles * (512 / tile) ** 2, 2),
    }
    return slide.shape[0] * slide.shape[1] / 1e6 / seconds, info


def throughput(tmp: Path) -> dict:
    """Null-model engine throughput (8192^2 JPEG OME-TIFF, halo 16, batch 8) against the
    one-thread I/O floor measured in the same run (target: ratio >= 1.0 at 512 px)."""
    slide = _slide_8192(tmp)
    out = {"load_average": os.getloadavg()[0], "cores": os.cpu_count()}
    floor, floor_cpu = io_floor(slide, tmp)
    out["io_floor_one_thread_mp_s"] = round(floor, 2)
    out["io_floor_cpu_ms_per_512px"] = round(floor_cpu, 2)
    for tile in (512, 256):
        mps, info = _engine_mps(slide, _null_model, tmp / f"null{tile}.zarr", tile)
        out[f"engine_null_{tile}px"] = {"mp_s": round(mps, 2), **info}
    mps, info = _engine_mps(slide, _null_model, tmp / "background.zarr", 512, min_tissue=2)
    out["engine_background_512px"] = {"mp_s": round(mps, 2), **info}
    out["ratio_engine_512_to_floor"] = round(out["engine_null_512px"]["mp_s"] / floor, 3)
    out["load_average_after"] = os.getloadavg()[0]
    return out


def standin(tmp: Path, ms_per_tile: float = 15.0, batch: int = 8) -> dict:
    """Engine rate of a model that sleeps ``ms_per_tile`` per 512 px tile (GIL released, as a GPU
    computes) over its own rate on batches in memory (target: >= 0.9)."""
    slide = _slide_8192(tmp)
    model = _standin_model(ms_per_tile)
    windows = np.zeros((batch, 544, 544, 3), np.uint8)
    t0 = time.perf_counter()
    for _ in range(8):
        model(windows)
    own = 8 * batch / (time.perf_counter() - t0)
    load = os.getloadavg()[0]
    _, info = _engine_mps(slide, model, tmp / "standin.zarr", 512, batch)
    return {
        "load_average": load,
        "own_tiles_per_s": round(own, 1),
        "engine": info,
        "ratio": round(info["tiles_per_s"] / own, 3),
    }


def _memory_child(phase: str, size: int, tmp: str) -> None:
    """Run in a fresh process, so ru_maxrss is this phase's peak: "write" the slide tile by
    tile, or "stain" it; print the peak resident memory as JSON."""
    tmp = Path(tmp)
    path = tmp / f"slide{size}.ome.tif"
    t0 = time.perf_counter()
    info = {"phase": phase, "size": size}
    if phase == "write":
        write_ome_tiff(textured_slide(size), path, pixel_size=0.5, compression="jpeg")
    else:
        result = stain_level(
            open_slide(path),
            ConvNet(width=8, depth=2),
            tmp / f"out{size}.zarr",
            specs=[IHC],
            tile=512,
            halo=2,
            batch_size=4,
            min_tissue=0,
        )
        info["tiles"] = result.computed
    info["seconds"] = time.perf_counter() - t0
    info["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(info))


def memory(tmp: Path) -> dict:
    """Peak RSS (MiB) writing and staining a 5000^2, 10000^2 and 20000^2 slide, each in its own
    process (the 5000 px run, 100 tiles, ends before the caches fill; 10000 px shows the
    plateau)."""
    runs = {}
    for size in (5000, 10000, 20000):
        for phase in ("write", "stain"):
            out = subprocess.run(
                [sys.executable, __file__, "_memory_child", phase, str(size), str(tmp)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs[f"{phase}_{size}"] = json.loads(out.strip().splitlines()[-1])
    return {
        "runs": runs,
        **{
            f"stain_peak_ratio_20000_to_{size}": runs["stain_20000"]["peak_rss_mib"]
            / runs[f"stain_{size}"]["peak_rss_mib"]
            for size in (5000, 10000)
        },
    }


def seams(tmp: Path) -> dict:
    """Seam metric of the stitched output of a CNN with receptive-field radius 4."""
    from vstain.io.slide import Slide

    image = np.asarray(textured_slide(1024, chunk=1024))
    slide = Slide(tmp / "seams.png", [da.from_array(image, chunks=256)], 0.5)
    model, tile = ConvNet(width=16), 128
    whole = model(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)["ihc"][0].numpy()
    reference = seam_metric(np.rint(whole.transpose(1, 2, 0) * 255), tile)
    out = {"whole_image_reference": reference}
    for name, halo, blend in [
        ("crop_halo_covers_rf", 4, "crop"),
        ("crop_no_halo", 0, "crop"),
        ("feather_halo_2", 2, "feather"),
    ]:
        store = tmp / f"seams_{name}.zarr"
        stain_level(
            slide, model, store, specs=[IHC], tile=tile, halo=halo, blend=blend, min_tissue=0
        )
        stitched = open_slide(store / "ihc").levels[0].compute()
        out[name] = seam_metric(stitched, tile)
    return out


def _label_dark(batch: np.ndarray) -> dict:
    """Instance labels of each window: 4-connected components of its darker half (no model, so
    the engine's own costs dominate)."""
    from scipy import ndimage

    gray = batch.mean(axis=1)
    return {"cells": np.stack([ndimage.label(g < 0.62)[0][None] for g in gray])}


def instances(tmp: Path, size: int = 8192, tile: int = 256) -> dict:
    """Seconds to join the objects tile borders cut (`OutputStore.complete`) against the tile run
    that labelled them, with a labelling as cheap as a threshold (a model only adds to the run)."""
    level = textured_slide(size)
    spec = OutputSpec("cells", "instances", 1, background=0)
    path = tmp / "instances.zarr"
    OutputStore.create(
        path, shape=(size, size), tile=tile, specs=[spec], pixel_size=None, settings={}
    )
    grid = TileGrid((size, size), tile, 0)
    start = time.perf_counter()
    run_tiles(level, _label_dark, OutputStore.open(path, concurrent=True), grid, grid.tiles())
    run = time.perf_counter() - start
    store = OutputStore.open(path, concurrent=True)
    start = time.perf_counter()
    store.complete()
    join = time.perf_counter() - start
    cells = np.asarray(store.levels["cells"][0][0])
    cut, _ = merged_ids(border_pairs(store.edges["cells"], store.done.shape[0]))
    return {
        "tiles": len(grid.tiles()),
        "objects": int(len(np.unique(cells)) - 1),
        "parts_joined": len(cut),
        "tile_run_s": round(run, 2),
        "join_s": round(join, 2),
        "join_over_run": round(join / run, 3),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_memory_child":
        _memory_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    which = sys.argv[1:] or ["throughput", "standin", "efficiency", "memory", "seams", "instances"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in which:
            print(name, json.dumps(globals()[name](Path(tmp)), indent=1), flush=True)


if __name__ == "__main__":
    main()
