"""Plan a staining run once: every front end (CLI, widget job, batch) asks `plan_run` and gets
the level, grid, store, output specs and settings, with every check of the request done here,
before anything is written."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vstain.color.stain_normalisation import Normaliser
from vstain.errors import ModelError, RegionError, VstainError
from vstain.io import Slide, open_slide
from vstain.io.ome_zarr import is_output_store
from vstain.models.device import auto_batch_size
from vstain.pipeline import normalise
from vstain.pipeline.destination import Destination, check_destination, destination
from vstain.pipeline.glass import glass_colour, glass_window
from vstain.pipeline.loaded_model import LoadedModel, load_model
from vstain.pipeline.outputs import output_specs
from vstain.tiles import OutputSpec, TileGrid
from vstain.tiles.job import run_settings

#: Tiles with less tissue than this fraction are written as background.
MIN_TISSUE = 0.05
#: Largest tile side accepted (px): a model's working memory grows with its square.
MAX_TILE = 8192
#: Tiles per model call where the device does not report its free memory (CPU, MPS).
DEFAULT_BATCH = 4
#: Blending schemes of overlapping tiles (see vstain.tiles.blend).
BLENDS = ("crop", "feather")
#: Side (px) of the glass the model is run on to learn the colour it paints glass.
GLASS_CORE = 64
#: Predict options the engine sets itself, per window.
ENGINE_OPTIONS = ("origin",)

Region = tuple[int, int, int, int]


@dataclass(frozen=True)
class RunPlan:
    """One planned run: what to read (``slide`` at ``level``, ``region``/``toward`` in that
    level's pixels), with what (``model``, ``options``), how (``grid``, ``batch_size``, ``blend``,
    ``min_tissue``) and where (``dest``, its ``specs``, the ``settings`` a resume must match and
    the ``record`` a new store keeps besides: glass colour, slide stain statistics)."""

    slide: Slide
    model: LoadedModel
    level: int
    grid: TileGrid
    region: Region | None
    toward: tuple[float, float] | None
    dest: Destination
    specs: list[OutputSpec]
    settings: dict
    options: dict
    batch_size: int
    blend: str
    resume: bool
    overwrite: bool
    record: dict
    normaliser: Normaliser | None = None
    min_tissue: float = MIN_TISSUE

    @property
    def store(self) -> Path:
        return self.dest.store

    @property
    def downsample(self) -> float:
        return self.slide.downsamples[self.level]

    @property
    def pixel_size(self) -> float | None:
        return self.slide.level_pixel_size(self.level)


def plan_run(
    slide: Slide | str | Path,
    model,
    out,
    *,
    device: str = "auto",
    region=None,
    level: int | None = None,
    tile: int | None = None,
    batch_size: int | None = None,
    toward=None,
    blend: str = "crop",
    resume: bool = False,
    overwrite: bool = False,
    options: dict | None = None,
) -> RunPlan:
    """Check a staining request and plan it; raises `VstainError` saying what to change.

    ``model`` is a `LoadedModel`, a `StainModel`, a checkpoint path or a shipped name; ``region``
    (x, y, w, h) and ``toward`` (x, y) are in level-0 pixels; ``level`` defaults to the one whose
    pixel size is nearest the model's.
    """
    slide = slide if isinstance(slide, Slide) else open_slide(slide)
    dest = destination(out)
    check_destination(dest, slide.path, resume=resume, overwrite=overwrite)
    loaded = load_model(model, device)
    card = loaded.card
    tile, batch_size, options = check_request(
        loaded, tile=tile, batch_size=batch_size, blend=blend, options=options
    )
    level = choose_level(slide, card.pixel_size) if level is None else check_level(slide, level)
    if dest.ome_tiff and region is not None:
        raise VstainError("OME-TIFF output is for whole slides; use OUT.zarr with --region.")
    if dest.ome_tiff and dest.out.exists() and not (overwrite or resume):
        raise VstainError(f"{dest.out} exists. Use --overwrite to replace it.")
    shape = tuple(int(s) for s in slide.levels[level].shape[:2])
    grid = TileGrid(shape, tile, card.halo, loaded.model.size_multiple)
    ds = slide.downsamples[level]
    region = None if region is None else level_region(slide, region, level)
    toward = None if toward is None else (toward[0] / ds, toward[1] / ds)
    settings = run_settings(
        slide, level, card.halo, grid.align, blend, model_settings(card, options)
    )
    specs = output_specs(loaded.model.outputs_for(normalise.model_options(options)))
    resumed = dest.store if resume and is_output_store(dest.store) else None
    record, normaliser = {}, None
    method = options.get(normalise.OPTION, "none")  # checked with the options
    if method != "none":
        normaliser, record[normalise.OPTION] = normalise.slide_normaliser(
            slide, level, card, method, resumed
        )
    if resumed is None:  # a resumed store keeps its own background
        specs, record["glass"] = painted_glass(
            slide, level, loaded, grid, options, specs, normaliser
        )
    return RunPlan(
        slide,
        loaded,
        level,
        grid,
        region,
        toward,
        dest,
        specs,
        settings,
        options,
        batch_size,
        blend,
        resume,
        overwrite,
        record,
        normaliser,
    )


def check_request(
    loaded: LoadedModel, *, tile, batch_size, blend: str = "crop", options: dict | None = None
) -> tuple[int, int, dict]:
    """The checks of a request that need the model but no slide: tile (None: the card's),
    batch size (None: from the device's free memory), blend and predict options. Returns
    (tile, batch_size, options)."""
    options = check_options(loaded, options)
    tile = check_tile(loaded, loaded.card.tile_size if tile is None else tile)
    if batch_size is None:
        window = tile + 2 * loaded.card.halo
        batch_size = auto_batch_size(loaded.tile_function(options), window, DEFAULT_BATCH)
    batch_size = check_count(batch_size, "batch size")
    if blend not in BLENDS:
        raise VstainError(f"Blend must be one of {', '.join(BLENDS)}, got {blend!r}.")
    return tile, batch_size, options


def painted_glass(
    slide: Slide,
    level: int,
    loaded: LoadedModel,
    grid: TileGrid,
    options: dict,
    specs,
    normaliser: Normaliser | None = None,
) -> tuple[list[OutputSpec], dict]:
    """``specs`` with the ``ihc`` background set to what the model paints on the slide's glass,
    and a record of it for the store's settings (new stores only: a resumed store keeps its own)."""
    core = -(-GLASS_CORE // grid.align) * grid.align  # a small core: one forward pass, cheap
    found = glass_window(slide, level, core + 2 * grid.halo)
    if found is None:
        return specs, {"rgb": None, "from": "no glass on the slide: background stays white"}
    window, where = found
    rgb = glass_colour(loaded, window, grid.halo, options, normaliser)
    specs = [replace(s, background=rgb) if s.name == "ihc" else s for s in specs]
    return specs, {"rgb": [round(v, 4) for v in rgb], "from": where}


def model_settings(card, options: dict | None = None) -> dict:
    """What the output store records of the model; a resume must match it."""
    return {
        "architecture": card.architecture,
        "config": card.config,
        "steps": card.steps,
        "markers": card.markers,
        "options": dict(options or {}),
    }


def choose_level(slide: Slide, model_pixel_size: float | None) -> int:
    """The slide level whose pixel size is nearest the model's (level 0 when either is unknown)."""
    if model_pixel_size is None or slide.pixel_size is None:
        return 0
    sizes = [slide.level_pixel_size(i) for i in range(len(slide.levels))]
    return int(np.argmin([abs(np.log(s / model_pixel_size)) for s in sizes]))


def check_level(slide: Slide, level) -> int:
    if not _is_int(level) or not 0 <= level < len(slide.levels):
        raise VstainError(f"Level must be 0 to {len(slide.levels) - 1}, got {level!r}.")
    return int(level)


def check_count(value, what: str) -> int:
    """A positive whole number, or an error naming ``what``."""
    if not _is_int(value) or value < 1:
        raise VstainError(f"The {what} must be a whole number of at least 1, got {value!r}.")
    return int(value)


def check_tile(loaded: LoadedModel, tile) -> int:
    """``tile`` if it suits the model: a positive multiple of its stride, at most `MAX_TILE`."""
    m = loaded.model.size_multiple
    name = loaded.checkpoint.name if loaded.checkpoint else loaded.card.architecture
    if not _is_int(tile) or not m <= tile <= MAX_TILE or tile % m:
        raise ModelError(
            f"Tile size {tile!r} does not suit {name}: {loaded.card.architecture} needs a "
            f"multiple of {m} from {m} to {MAX_TILE} px (its default is "
            f"{loaded.card.tile_size}). Change the tile size."
        )
    return int(tile)


def check_options(loaded: LoadedModel, options: dict | None) -> dict:
    """Predict options the model takes, with values of the right type; raises ModelError."""
    options = dict(options or {})
    engine = sorted(set(options) & set(ENGINE_OPTIONS))
    if engine:
        raise ModelError(f"{', '.join(engine)} is set by the tile engine for each tile; drop it.")
    normalise.check_method(loaded.card, options)
    loaded.model.check_options(normalise.model_options(options))
    return options


def level_region(slide: Slide, region, level: int) -> Region:
    """A level-0 region (x, y, w, h) in pixels of ``level``, checked against the slide."""
    try:
        x, y, w, h = (float(v) for v in region)
    except (TypeError, ValueError):
        raise RegionError(f"A region is x, y, width, height; got {region!r}.") from None
    height, width = slide.levels[0].shape[:2]
    if not (w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height):
        raise RegionError(
            f"Region x={x:g}, y={y:g}, w={w:g}, h={h:g} is outside the slide ({width} x {height}"
            " px at full resolution). Give a positive width and height inside the slide."
        )
    ds = slide.downsamples[level]
    return int(x / ds), int(y / ds), max(int(w / ds), 1), max(int(h / ds), 1)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
