"""Fine-tuning rectangles as GeoJSON in QuPath's convention (level-0 pixel coordinates).

QuPath exports annotations as a FeatureCollection (or a list of Features) whose geometries are
polygons in full-resolution pixels, with the class in ``properties.classification.name``.
Rectangles classified "Validation" (any case) are validation regions.
"""

from __future__ import annotations

import json
from pathlib import Path

from vstain.errors import RegionError
from vstain.io.atomic import write_text_atomically
from vstain.io.limits import finite_number, loads_bounded
from vstain.train.regions import Region

VALIDATION = "Validation"
TRAINING = "Training"
COLOURS = {VALIDATION: [250, 160, 40], TRAINING: [40, 200, 120]}
#: Largest regions file read, bytes (rectangles take a few hundred bytes each).
MAX_BYTES = 64 * 2**20
#: Largest coordinate accepted, px (far beyond any slide; keeps the arithmetic in floats).
MAX_COORDINATE = 1e9


def regions_to_geojson(regions: list[Region]) -> dict:
    """A FeatureCollection with one axis-aligned rectangle per region."""
    features = []
    for r in regions:
        x0, y0, x1, y1 = r.x, r.y, r.x + r.w, r.y + r.h
        name = VALIDATION if r.validation else TRAINING
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
                },
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": name, "color": COLOURS[name]},
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_regions(path: str | Path, regions: list[Region]) -> Path:
    """Write ``regions`` as GeoJSON to ``path`` atomically."""
    return write_text_atomically(path, json.dumps(regions_to_geojson(regions), indent=1))


def _features(data) -> list[dict]:
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        data = data.get("features", [])
    elif isinstance(data, dict) and data.get("type") == "Feature":
        data = [data]
    if not isinstance(data, list) or not all(isinstance(f, dict) for f in data):
        raise RegionError("Not GeoJSON annotations: expected a FeatureCollection or Features.")
    return data


def _rectangle(feature: dict, index: int) -> tuple[int, int, int, int]:
    geometry = feature.get("geometry") or {}
    kind = geometry.get("type", "missing geometry") if isinstance(geometry, dict) else "geometry"
    if kind != "Polygon" or not geometry.get("coordinates"):
        raise RegionError(
            f"Annotation {index + 1} is a {kind}, not a rectangle; fine-tuning uses rectangles."
        )
    ring = geometry["coordinates"][0] if isinstance(geometry["coordinates"], list) else None
    if not isinstance(ring, list) or not all(map(_is_point, ring)):
        raise RegionError(
            f"Annotation {index + 1} has coordinates that are not finite pixel positions (pairs "
            f"of numbers within +-{MAX_COORDINATE:g}); draw and export it again."
        )
    ring = [tuple(p[:2]) for p in ring]
    xs, ys = sorted({p[0] for p in ring}), sorted({p[1] for p in ring})
    if len(xs) != 2 or len(ys) != 2:
        raise RegionError(
            f"Annotation {index + 1} is a polygon with {len(set(ring))} corners, not an "
            "axis-aligned rectangle; fine-tuning uses rectangles."
        )
    x0, y0 = round(xs[0]), round(ys[0])
    return x0, y0, round(xs[1]) - x0, round(ys[1]) - y0


def _is_point(point: object) -> bool:
    return (
        isinstance(point, list)
        and len(point) >= 2
        and all(finite_number(v) and abs(v) <= MAX_COORDINATE for v in point[:2])
    )


def _is_validation(feature: dict) -> bool:
    properties = feature.get("properties")
    classification = properties.get("classification") if isinstance(properties, dict) else None
    name = classification.get("name", "") if isinstance(classification, dict) else ""
    return str(name).lower() == VALIDATION.lower()


def read_regions(path: str | Path) -> list[Region]:
    """Rectangles of a GeoJSON file (QuPath export or `write_regions`)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES // 2**20} MiB; export only the rectangles")
        data = loads_bounded(raw.decode())
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RegionError(f"Cannot read regions from {path}: {e}.") from e
    regions = [
        Region(*_rectangle(f, i), validation=_is_validation(f))
        for i, f in enumerate(_features(data))
    ]
    if not regions:
        raise RegionError(f"{path} holds no annotations: draw rectangles and export them again.")
    return regions
