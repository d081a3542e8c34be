"""Memory of napari while the Virtual stain widget stains view after view across a large slide.

A 20000 x 20000 px simulated H&E (pyramidal OME-TIFF, generated once into the vstain cache) is
open in a real viewer at one screen pixel per slide pixel; the camera visits VIEWS places along
the slide's diagonal and "Stain view" runs at each (the shipped demo model, one store). Printed:
resident memory (RSS) after each view and its growth from the WARMUP-th view to the last, which
should stay within the caches' limits (napari's dask cache for the H&E layer, the engine's
decoded-chunk cache), not grow with the area visited.

python bench/bench_napari_memory.py [DASK_CACHE_MIB]   # re-runs itself under xvfb-run without a
                                                       # display; DASK_CACHE_MIB resizes napari's
                                                       # dask cache (default: napari's own size)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_napari import SCREEN, bench_viewer, process_for

SIZE = 20000
VIEWS = 12
WARMUP = 3


def rss_mib() -> float:
    """Resident memory of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def large_slide() -> Path:
    """The 20000 px simulated H&E, made on first use (a few minutes) and cached."""
    from vstain.io import write_ome_tiff
    from vstain.synth import synth_slide
    from vstain.synth.demo import cache_dir

    path = cache_dir() / "bench" / f"he-{SIZE}.ome.tif"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        he = synth_slide("ck818", size=SIZE, seed=5, pixel_size=0.5).he
        write_ome_tiff(he, path, pixel_size=0.5)
    return path


def main() -> None:
    from dask.cache import Cache
    from napari.utils import resize_dask_cache

    viewer, app, he, widget = bench_viewer(large_slide(), "bench memory")
    limit = int(sys.argv[1]) * 2**20 if len(sys.argv) > 1 else None
    dask_cache: Cache = resize_dask_cache(limit)
    out = {
        "slide_px": SIZE,
        "canvas": list(viewer.canvas.size),
        "model": widget.model_name,
        "napari_dask_cache_mib": round(dask_cache.cache.available_bytes / 2**20),
        "engine_chunk_cache_mib_per_job": 64,
        "rss_mib": [],
    }
    height, width = he.level_shapes[0][:2] * he.scale
    with tempfile.TemporaryDirectory() as tmp:
        widget.folder_edit.setText(tmp)
        viewer.scene.camera.zoom = 1 / he.scale[-1]
        start = time.perf_counter()
        for i in range(VIEWS):
            f = 0.1 + 0.8 * i / (VIEWS - 1)
            viewer.scene.camera.center = (0, height * f, width * f)
            process_for(app, 0.5)
            widget.stain_view()
            while widget.busy:
                app.processEvents()
                time.sleep(0.005)
            process_for(app, 0.5)
            out["rss_mib"].append(round(rss_mib()))
        out["seconds"] = round(time.perf_counter() - start)
    rss = out["rss_mib"]
    growth = rss[-1] - rss[WARMUP - 1]
    out["growth_after_warmup_mib"] = growth
    out["growth_per_view_after_warmup_mib"] = round(growth / (VIEWS - WARMUP), 1)
    viewer.close()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    if not os.environ.get("DISPLAY"):
        os.execvp("xvfb-run", ["xvfb-run", "-a", "-s", SCREEN, sys.executable, *sys.argv])
    sys.path.insert(0, str(Path(__file__).parent))
    main()
