"""Stain a slide with a model: the one entry point the CLI, the widget and batch workers share."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import numpy as np

from vstain.errors import OutputExistsError, VstainError
from vstain.io import Slide, open_slide, write_ome_tiff
from vstain.tiles import OutputSpec, RunResult, stain_level

#: How each model output is stored (see OutputSpec); background = white glass / nothing.
OUTPUT_SPECS = {
    "ihc": OutputSpec("ihc", "rgb", 3, background=1.0),
    "uncertainty": OutputSpec("uncertainty", "scalar", 1, background=0.0),
    "segmentation": OutputSpec("segmentation", "instances", 1, background=0),
    "keypoints": OutputSpec("keypoints", "labels", 1, background=0),
}
TIFF_SUFFIXES = (".tif", ".tiff")


def output_specs(outputs: list[str]) -> list[OutputSpec]:
    """Raster outputs of a model card that the tile engine stores."""
    return [OUTPUT_SPECS[name] for name in outputs if name in OUTPUT_SPECS]


def keypoint_raster(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """B x N x 2 keypoints ((x, y) in tile pixels) as B x 1 x H x W labels: 1 at each keypoint's
    pixel, 0 elsewhere, so the tile engine crops, stores and resumes them like any raster."""
    raster = np.zeros((len(points), 1, height, width), np.int32)
    for b, xy in enumerate(np.asarray(points)):
        col, row = np.rint(xy[:, 0]).astype(int), np.rint(xy[:, 1]).astype(int)
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        raster[b, 0, row[inside], col[inside]] = 1
    return raster


def rasterised(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A model's outputs for the tile engine: point outputs drawn into rasters of the tile size."""
    if "keypoints" not in outputs:
        return outputs
    height, width = outputs["ihc"].shape[-2:]
    return {**outputs, "keypoints": keypoint_raster(outputs["keypoints"], height, width)}


def tile_function(model, device, options: dict | None = None):
    """The tile engine's batch function for ``model`` on ``device`` (already there): predictions
    with ``options``, point outputs rasterised; models that take an ``origin`` (position-seeded
    noise) get each window's position."""
    from vstain.models.device import predict_batch

    options = dict(options or {})
    if "origin" not in inspect.signature(model.infer).parameters:
        return lambda batch: rasterised(predict_batch(model, batch, device, **options))

    def positioned(batch, origins):
        return rasterised(predict_batch(model, batch, device, origin=origins, **options))

    return positioned


def choose_level(slide: Slide, model_pixel_size: float | None) -> int:
    """The slide level whose pixel size is nearest the model's (level 0 when either is unknown)."""
    if model_pixel_size is None or slide.pixel_size is None:
        return 0
    sizes = [slide.level_pixel_size(i) for i in range(len(slide.levels))]
    return int(np.argmin([abs(np.log(s / model_pixel_size)) for s in sizes]))


def load_model(model, device: str = "auto"):
    """A StainModel, from itself, a checkpoint path, or a registry name with shipped weights."""
    from vstain.models import StainModel, choose_device, load_checkpoint, prepare_model
    from vstain.weights import resolve_checkpoint

    dev = choose_device(device)
    if not isinstance(model, StainModel):
        model = load_checkpoint(resolve_checkpoint(str(model)), device=dev)
    return prepare_model(model, dev)


def model_settings(card, options: dict | None = None) -> dict:
    """What the output store records of the model; a resume must match it."""
    return {
        "architecture": card.architecture,
        "config": card.config,
        "steps": card.steps,
        "markers": card.markers,
        "options": dict(options or {}),
    }


def stain_slide(
    slide: Slide | str | Path,
    model,
    out,
    *,
    device: str = "auto",
    region=None,
    level: int | None = None,
    tile: int | None = None,
    batch_size: int = 4,
    toward=None,
    blend: str = "crop",
    resume: bool = False,
    overwrite: bool = False,
    progress=None,
    cancel=None,
    options: dict | None = None,
) -> RunResult:
    """Stain ``slide`` with ``model`` into ``out`` (``.zarr`` OME-Zarr or ``.ome.tif`` OME-TIFF).

    ``region`` (x, y, w, h) and ``toward`` (x, y) are in level-0 pixels. OME-TIFF output is
    staged in ``out + ".zarr"`` (kept while unfinished so ``resume`` works) and converted when
    every tile is done.
    ``options`` go to the model's ``predict`` (sampler steps, n_samples, ...); they are part of
    the store's settings, so a resume with other options is refused instead of mixing outputs.
    """
    from vstain.models.device import choose_device

    slide = slide if isinstance(slide, Slide) else open_slide(slide)
    model = load_model(model, device)
    dev = choose_device(device)
    card = model.card
    level = choose_level(slide, card.pixel_size) if level is None else level
    out = Path(out)
    tiff = out.suffix.lower() in TIFF_SUFFIXES
    if tiff and out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists. Use --overwrite to replace it.")
    if tiff and region is not None:
        raise VstainError("OME-TIFF output is for whole slides; use OUT.zarr with --region.")
    store = out.with_name(out.name + ".zarr") if tiff else out
    ds = slide.downsamples[level]
    if region is not None:
        x, y, w, h = region
        region = (int(x / ds), int(y / ds), max(int(w / ds), 1), max(int(h / ds), 1))
    if toward is not None:
        toward = (toward[0] / ds, toward[1] / ds)
    result = stain_level(
        slide,
        tile_function(model, dev, options),
        store,
        specs=output_specs(card.outputs),
        level=level,
        tile=tile or card.tile_size,
        halo=card.halo,
        align=model.size_multiple,
        region=region,
        toward=toward,
        batch_size=batch_size,
        blend=blend,
        model_settings=model_settings(card, options),
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        cancel=cancel,
    )
    if tiff and not result.cancelled:
        convert_to_ome_tiff(store, out, slide.level_pixel_size(level), overwrite)
    return result


def convert_to_ome_tiff(store: Path, out: Path, pixel_size: float | None, overwrite: bool) -> None:
    """Write a finished store's IHC as pyramidal OME-TIFF ``out``, then delete the store."""
    write_ome_tiff(open_slide(store / "ihc"), out, pixel_size=pixel_size, overwrite=overwrite)
    shutil.rmtree(store)
