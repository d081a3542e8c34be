"""GPU feeding: each shipped model through the tile engine on CUDA, 512 px tiles.

python bench/bench_gpu.py [model ...]   # default: every shipped checkpoint

For each model: tiles/s through the engine (`Predictor`: uint8 both ways, pinned non-blocking
copies one batch ahead, autocast and channels-last as on by default, batch size from free
memory), the fraction of the run's wall time the device spends in forward passes (CUDA events
around each `model.predict` on the compute stream), and the peak device memory. Without CUDA it
says so and measures nothing.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from vstain.stain import load_model, output_specs, rasterised

from bench_engine import textured_slide
from vstain.io import open_slide, write_ome_tiff
from vstain.models.device import Predictor, auto_batch_size
from vstain.tiles import stain_level
from vstain.weights import shipped_checkpoints

TILE = 512
SLIDE = 8192


class ForwardClock:
    """Sums the device time between CUDA events recorded around each forward pass."""

    def __init__(self, model):
        self.pairs: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        predict = model.predict

        def timed(x, **options):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = predict(x, **options)
            end.record()
            self.pairs.append((start, end))
            return out

        model.predict = timed

    def seconds(self) -> float:
        torch.cuda.synchronize()
        return sum(s.elapsed_time(e) for s, e in self.pairs) / 1000


def run_model(name: str, slide, tmp: Path) -> dict:
    model = load_model(name, "cuda")
    device = next(model.parameters()).device
    card = model.card
    clock = ForwardClock(model)
    predictor = Predictor(model, device, postprocess=rasterised)
    batch = auto_batch_size(predictor, TILE + 2 * card.halo)
    clock.pairs.clear()
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = stain_level(
        slide,
        predictor,
        tmp / f"{name}.zarr",
        specs=output_specs(card.outputs),
        tile=TILE,
        halo=card.halo,
        align=model.size_multiple,
        batch_size=batch,
        min_tissue=0,
    )
    wall = time.perf_counter() - start
    return {
        "batch": batch,
        "halo": card.halo,
        "tiles": result.computed,
        "tiles_per_s": round(result.computed / wall, 2),
        "forward_fraction_of_wall": round(clock.seconds() / wall, 3),
        "peak_device_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
        **predictor.settings,
    }


def main() -> None:
    if not torch.cuda.is_available():
        print("bench_gpu: skipped, no CUDA device on this machine (nothing was measured).")
        return
    names = sys.argv[1:] or list(shipped_checkpoints())
    print(f"device: {torch.cuda.get_device_name()}, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "slide.ome.tif"
        write_ome_tiff(textured_slide(SLIDE), path, pixel_size=0.5, compression="jpeg")
        slide = open_slide(path)
        for name in names:
            print(name, json.dumps(run_model(name, slide, tmp)), flush=True)


if __name__ == "__main__":
    main()
