"""OME-NGFF multiscales metadata: building it (version 0.5) and reading it (0.1 to 0.5).

NGFF 0.5 stores it on a zarr v3 group under ``attributes["ome"]``; up to 0.4 it is the group's
``.zattrs["multiscales"]`` on zarr v2. Axes are dicts with name / type / unit from 0.4, plain
names in 0.3 and fixed ``t, c, z, y, x`` before.
"""

from __future__ import annotations

from collections.abc import Sequence

from vstain.io.limits import finite_number

NGFF_VERSION = "0.5"
#: Axis order of images before NGFF 0.3, which had no axes metadata.
LEGACY_AXES = ("t", "c", "z", "y", "x")


def multiscales_attrs(
    factors: Sequence[tuple[float, float]],
    pixel_size: float | None,
    name: str,
    channel_names: Sequence[str] | None = None,
) -> dict:
    """Group attributes of an NGFF 0.5 (C, Y, X) image whose level k is downsampled by
    ``factors[k]`` = (fy, fx); scales are in micrometres, or unitless from 1 without a pixel size.
    """
    unit = {"unit": "micrometer"} if pixel_size is not None else {}
    base = 1.0 if pixel_size is None else float(pixel_size)
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", **unit},
        {"name": "x", "type": "space", **unit},
    ]
    datasets = [
        {
            "path": str(k),
            "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, base * float(fy), base * float(fx)]}
            ],
        }
        for k, (fy, fx) in enumerate(factors)
    ]
    ome: dict = {
        "version": NGFF_VERSION,
        "multiscales": [{"name": name, "axes": axes, "datasets": datasets}],
    }
    if channel_names is not None:
        ome["omero"] = {"channels": [{"label": str(n)} for n in channel_names]}
    return {"ome": ome}


def find_multiscales(attrs: dict) -> tuple[dict, str | None] | None:
    """(first multiscales entry, NGFF version) from group attributes, or None if there is none.

    The entry is returned as found; `structure_problem` says whether it can be used.
    """
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        entries, version = ome["multiscales"], ome.get("version")
    elif attrs.get("multiscales"):
        entries, version = attrs["multiscales"], None
    else:
        return None
    entry = entries[0] if isinstance(entries, list) and entries else entries
    if version is None and isinstance(entry, dict):
        version = entry.get("version")
    return entry, version


def structure_problem(multiscale: object) -> str | None:
    """What makes a multiscales entry unusable (datasets, axes, scales), or None if nothing."""
    if not isinstance(multiscale, dict):
        return f"the multiscales entry is a {type(multiscale).__name__}, not an object"
    datasets = multiscale.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        return "'datasets' must list at least one level"
    if not all(isinstance(d, dict) and isinstance(d.get("path"), str) for d in datasets):
        return "every dataset needs a 'path' string"
    axes = multiscale.get("axes")
    if axes is not None and not (isinstance(axes, list) and all(map(_valid_axis, axes))):
        return "'axes' must be a list of names, or of objects with a 'name' and a 'unit' string"
    if axes is not None and len({a if isinstance(a, str) else a["name"] for a in axes}) < len(axes):
        return "axis names must differ"
    for owner in (multiscale, *datasets):
        transforms = owner.get("coordinateTransformations", [])
        if not isinstance(transforms, list) or not all(isinstance(t, dict) for t in transforms):
            return "'coordinateTransformations' must be a list of objects"
        for t in transforms:
            scale = t.get("scale") if t.get("type") == "scale" else [1]
            if not isinstance(scale, list) or not all(finite_number(v) and v > 0 for v in scale):
                return f"a scale must be a list of positive numbers, got {scale!r}"
    return None


def _valid_axis(axis: object) -> bool:
    if isinstance(axis, str):
        return True
    return (
        isinstance(axis, dict)
        and isinstance(axis.get("name"), str)
        and isinstance(axis.get("unit", ""), str)
    )


def axes_of(multiscale: dict, ndim: int) -> list[tuple[str, str | None]]:
    """(name, unit) of each axis of a multiscales entry for arrays with ``ndim`` dimensions."""
    axes = multiscale.get("axes")
    if axes is None:
        return [(name, None) for name in LEGACY_AXES[-ndim:]]
    return [(a, None) if isinstance(a, str) else (a["name"], a.get("unit")) for a in axes]


def dataset_scales(multiscale: dict, ndim: int) -> list[list[float]]:
    """Scale of every dataset (level), combined with the multiscale-wide scale if any.

    Translations are ignored: a `Slide` has no origin.
    """
    common = _scale(multiscale.get("coordinateTransformations", []), ndim)
    scales = [_scale(d.get("coordinateTransformations", []), ndim) for d in multiscale["datasets"]]
    return [[a * b for a, b in zip(scale, common, strict=True)] for scale in scales]


def _scale(transforms: list[dict], ndim: int) -> list[float]:
    """The product of the scale transforms; ValueError if one has not ``ndim`` entries."""
    scale = [1.0] * ndim
    for t in transforms:
        if t.get("type") == "scale":
            scale = [a * float(b) for a, b in zip(scale, t["scale"], strict=True)]
    return scale
