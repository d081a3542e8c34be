"""Render docs/images/synth.png: what the tissue simulator makes.

Row 1: one H&E region and the IHC of each marker (same tissue). Row 2: ground truth (nuclei,
marker-positive cells). Row 3: an adjacent-section pair with the true deformation drawn as a grid,
and a whole slide at low magnification.

python docs/make_synth_figure.py [output.png]
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vstain.synth import MARKERS, PixelClass, SectionTransform, make_spec, render_tile
from vstain.synth.dataset import tissue_tiles

TILE = 384
GAP = 6
TITLE = 22
NAMES = {"ck818": "CK8/18", "cd3": "CD3", "ki67": "Ki67"}


def _tissue_corner(spec, side: int) -> tuple[int, int]:
    candidates = tissue_tiles(spec, side, 0.97)
    x, y = candidates[len(candidates) // 3]
    return int(x), int(y)


def _labels_rgb(labels: np.ndarray) -> np.ndarray:
    """Instance labels in random colours on black."""
    rng = np.random.default_rng(0)
    palette = rng.integers(60, 256, (int(labels.max()) + 1, 3)).astype(np.uint8)
    palette[0] = 0
    return palette[labels]


def _overlay(image: np.ndarray, mask: np.ndarray, colour=(0, 200, 255)) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = 0.45 * out[mask] + 0.55 * np.asarray(colour, np.float32)
    return out.astype(np.uint8)


def _grid_on(image: np.ndarray, pair, step: int = 32) -> np.ndarray:
    """Lines of a regular H&E grid drawn where the true transform puts them in the IHC tile."""
    out = Image.fromarray(image)
    draw = ImageDraw.Draw(out)
    t = np.linspace(0, TILE, 4 * TILE)
    for k in range(0, TILE + 1, step):
        for xs, ys in ((np.full_like(t, k), t), (t, np.full_like(t, k))):
            qx, qy = pair.transform.he_to_ihc(xs + pair.x, ys + pair.y)
            draw.line(
                list(zip(qx - pair.ihc_x, qy - pair.ihc_y, strict=True)), fill=(0, 170, 0), width=1
            )
    return np.asarray(out)


def _slide_thumbnail(seed: int) -> np.ndarray:
    spec = make_spec(seed, "ck818", 1536, pixel_size=1.0)
    he = render_tile(spec, 0, 0, 1536, 1536).he
    return np.asarray(Image.fromarray(he).resize((TILE, TILE), Image.Resampling.LANCZOS))


def panels(seed: int = 4) -> list[list[tuple[str, np.ndarray]]]:
    spec = make_spec(seed, "ck818", 4096)
    x, y = _tissue_corner(spec, TILE)
    pairs = {m: render_tile(dataclasses.replace(spec, marker=m), x, y, TILE, TILE) for m in MARKERS}
    he = pairs["ck818"].he
    truth = pairs["ck818"].he_truth
    row1 = [("H&E (20x, 0.5 um/px)", he)] + [
        (f"{NAMES[m]} IHC, same section", pairs[m].ihc) for m in MARKERS
    ]
    row2 = [("nuclei (instance labels)", _labels_rgb(truth.nuclei))] + [
        (f"{NAMES[m]}-positive cells", _overlay(he, truth.positive[m])) for m in MARKERS
    ]
    adjacent = dataclasses.replace(spec, mode="adjacent-section")
    tr = SectionTransform.from_spec(adjacent)
    qx, qy = tr.he_to_ihc(np.array(x + TILE / 2), np.array(y + TILE / 2))
    pair = render_tile(
        adjacent,
        x,
        y,
        TILE,
        TILE,
        ihc_origin=(round(float(qx)) - TILE // 2, round(float(qy)) - TILE // 2),
    )
    epithelium = pair.ihc_truth.pixel_class == PixelClass.EPITHELIUM
    row3 = [
        ("adjacent section: H&E", pair.he),
        ("adjacent section: CK8/18 IHC", pair.ihc),
        (
            "true transform (H&E grid on IHC)",
            _grid_on(_overlay(pair.ihc, epithelium, (255, 255, 255)), pair),
        ),
        ("whole slide, 1.5 mm (1 um/px)", _slide_thumbnail(seed)),
    ]
    return [row1, row2, row3]


def compose_figure(rows: list[list[tuple[str, np.ndarray]]]) -> Image.Image:
    cols = max(len(r) for r in rows)
    width = cols * TILE + (cols + 1) * GAP
    height = len(rows) * (TILE + TITLE) + (len(rows) + 1) * GAP
    figure = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default(size=15)
    for r, row in enumerate(rows):
        top = GAP + r * (TILE + TITLE + GAP)
        for c, (title, image) in enumerate(row):
            left = GAP + c * (TILE + GAP)
            draw.text((left, top + 2), title, fill="black", font=font)
            figure.paste(Image.fromarray(image), (left, top + TITLE))
    return figure


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "images" / "synth.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    compose_figure(panels()).save(out)
    print(f"wrote {out}")
