"""Layer data tuples built from slides, so every vstain layer shares scale and units."""

from __future__ import annotations

from vstain.io import Slide


def slide_layer_kwargs(slide: Slide, name: str | None = None) -> dict:
    """napari Image kwargs for a slide: multiscale RGB with micrometre scale when known."""
    kwargs = {
        "name": name or slide.path.name,
        "rgb": True,
        "multiscale": len(slide.levels) > 1,
        "metadata": {
            "path": str(slide.path),
            "pixel_size_um": slide.pixel_size,
            **{k: v for k, v in slide.metadata.items() if isinstance(v, str | int | float)},
        },
    }
    if slide.pixel_size:
        kwargs["scale"] = (slide.pixel_size, slide.pixel_size)
        kwargs["units"] = ("um", "um")
    return kwargs


def slide_layer_data(slide: Slide, name: str | None = None) -> tuple:
    """(data, kwargs, "image") for napari: the level list, or level 0 for a single-level slide."""
    data = slide.levels if len(slide.levels) > 1 else slide.levels[0]
    return data, slide_layer_kwargs(slide, name), "image"
