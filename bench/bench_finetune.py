"""Fine-tuning a demo checkpoint on a few rectangles of a slide from another "lab".

The base is the shipped pix2pix demo checkpoint (trained on simulated CK8/18 slides with their
own stain vectors). The target is a simulated same-section pair with other stain vectors (12 deg
jitter), a weaker marker (DAB OD 0.55 at full expression) and another scanner. Four 512 x 512
rectangles where the real IHC shows the marker train, two more validate; `vstain finetune` runs
STEPS steps on this CPU. Printed: validation PSNR / SSIM / DAB correlation / positive-object F1
before and after, and the wall time.

python bench/bench_finetune.py [--steps 300] [--part all]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = 3072
CROP = 512


def target_pair(folder: Path) -> tuple[Path, Path]:
    from vstain.synth import make_spec
    from vstain.synth.export import export_pair

    spec = make_spec(31, "ck818", SIZE, marker_intensity=0.55, stain_jitter_deg=12.0)
    he, ihc = folder / "he.ome.tif", folder / "ihc.ome.tif"
    export_pair(spec, he, ihc)
    return he, ihc


def marker_rectangles(ihc: Path, n: int) -> list[tuple[int, int]]:
    """Corners of the ``n`` non-overlapping CROP squares with the most DAB-positive area in the
    real IHC (where a pathologist would outline regions to learn the marker from)."""
    from vstain.color import dab_od
    from vstain.io import open_slide

    slide = open_slide(ihc)
    level = min(2, len(slide.levels) - 1)
    f = slide.downsamples[level]
    positive = dab_od(np.asarray(slide.levels[level])) > 0.2
    cells = []
    for y in range(0, SIZE - CROP + 1, CROP):
        for x in range(0, SIZE - CROP + 1, CROP):
            part = positive[int(y / f) : int((y + CROP) / f), int(x / f) : int((x + CROP) / f)]
            cells.append((part.mean(), x, y))
    return [(x, y) for _, x, y in sorted(cells, reverse=True)[:n]]


def main() -> None:
    from vstain.cli import main as vstain
    from vstain.train.region_geojson import write_regions
    from vstain.train.regions import Region

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--part", default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        he, ihc = target_pair(tmp)
        corners = marker_rectangles(ihc, 6)
        rng = np.random.default_rng(0)
        order = rng.permutation(len(corners))
        regions = [Region(*corners[k], CROP, CROP, validation=i >= 4) for i, k in enumerate(order)]
        write_regions(tmp / "regions.geojson", regions)
        out = tmp / "tuned.safetensors"
        start = time.perf_counter()
        code = vstain(
            [
                "finetune",
                "--checkpoint",
                "pix2pix",
                "--he",
                str(he),
                "--ihc",
                str(ihc),
                "--regions",
                str(tmp / "regions.geojson"),
                "--aligned",
                "--out",
                str(out),
                "--steps",
                str(args.steps),
                "--part",
                args.part,
                "--val-every",
                "50",
            ]
        )
        seconds = time.perf_counter() - start
        from vstain.models import read_card

        card = read_card(out)
        print(
            json.dumps(
                {
                    "exit": code,
                    "steps": args.steps,
                    "part": args.part,
                    "regions": [r.__dict__ for r in regions],
                    "seconds": round(seconds),
                    "kept_step": card.steps,
                    "before": card.metrics["before"],
                    "after": card.metrics["after"],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
