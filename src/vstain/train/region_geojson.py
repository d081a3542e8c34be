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
from vstain.train.regions import Region

VALIDATION = "Validation"
TRAINING = "Training"
COLOURS = {VALIDATION: [250, 160, 40], TRAINING: [40, 200, 120]}


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
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        return data.get("features", [])
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    raise RegionError("Not GeoJSON annotations: expected a FeatureCollection or Features.")


def _rectangle(feature: dict, index: int) -> tuple[int, int, int, int]:
    geometry = feature.get("geometry") or {}
    if geometry.get("type") != "Polygon" or not geometry.get("coordinates"):
        raise RegionError(
            f"Annotation {index + 1} is a {geometry.get('type', 'missing geometry')}, not a "
            "rectangle; fine-tuning uses rectangles."
        )
    ring = [tuple(p[:2]) for p in geometry["coordinates"][0]]
    xs, ys = sorted({p[0] for p in ring}), sorted({p[1] for p in ring})
    if len(xs) != 2 or len(ys) != 2:
        raise RegionError(
            f"Annotation {index + 1} is a polygon with {len(set(ring))} corners, not an "
            "axis-aligned rectangle; fine-tuning uses rectangles."
        )
    x0, y0 = round(xs[0]), round(ys[0])
    return x0, y0, round(xs[1]) - x0, round(ys[1]) - y0


def _is_validation(feature: dict) -> bool:
    classification = (feature.get("properties") or {}).get("classification") or {}
    return str(classification.get("name", "")).lower() == VALIDATION.lower()


def read_regions(path: str | Path) -> list[Region]:
    """Rectangles of a GeoJSON file (QuPath export or `write_regions`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegionError(f"Cannot read regions from {path}: {e}.") from e
    regions = [
        Region(*_rectangle(f, i), validation=_is_validation(f))
        for i, f in enumerate(_features(data))
    ]
    if not regions:
        raise RegionError(f"{path} holds no annotations: draw rectangles and export them again.")
    return regions
