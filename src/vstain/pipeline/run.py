"""Run a planned staining job: the one road from a slide to an output store or OME-TIFF."""

from __future__ import annotations

import shutil
from pathlib import Path

from vstain.io import open_slide, write_ome_tiff
from vstain.pipeline.plan import RunPlan, plan_run
from vstain.tiles import RunResult, stain_level
from vstain.tiles.lock import StoreLock


def run_plan(plan: RunPlan, *, progress=None, cancel=None, opened=None) -> RunResult:
    """Stain ``plan`` into its store (locked while it runs, so a second writer fails at once); an
    OME-TIFF output is converted from its staging store once every tile is done, and the staging
    store removed. ``opened(store)`` is called once the store exists, before the first tile."""
    with StoreLock(plan.store):
        result = _stain(plan, progress, cancel, opened)
        if plan.dest.ome_tiff and not result.cancelled:
            convert_to_ome_tiff(plan.store, plan.dest.out, plan.pixel_size, overwrite=True)
    return result


def _stain(plan: RunPlan, progress, cancel, opened) -> RunResult:
    card = plan.model.card
    predict = plan.model.tile_function(plan.options, plan.normaliser)
    return stain_level(
        plan.slide,
        predict,
        plan.store,
        specs=plan.specs,
        level=plan.level,
        tile=plan.grid.tile,
        halo=card.halo,
        align=plan.grid.align,
        region=plan.region,
        toward=plan.toward,
        batch_size=plan.batch_size,
        blend=plan.blend,
        min_tissue=plan.min_tissue,
        model_settings=plan.settings["model"],
        record={**plan.record, "precision": predict.settings},
        resume=plan.resume,
        overwrite=plan.overwrite,
        progress=progress,
        cancel=cancel,
        opened=opened,
    )


def stain_slide(slide, model, out, *, progress=None, cancel=None, **request) -> RunResult:
    """Stain ``slide`` with ``model`` into ``out`` (``.zarr`` OME-Zarr or ``.ome.tif``): `plan_run`
    with ``request`` (region, level, tile, batch_size, toward, blend, resume, overwrite, options,
    device), then `run_plan`.

    OME-TIFF output is staged in ``out + ".zarr"`` (kept while unfinished so ``resume`` works).
    ``options`` go to the model's ``predict``; they are part of the store's settings, so a resume
    with other options is refused instead of mixing outputs.
    """
    return run_plan(plan_run(slide, model, out, **request), progress=progress, cancel=cancel)


def convert_to_ome_tiff(store: Path, out: Path, pixel_size: float | None, overwrite: bool) -> None:
    """Write a finished store's IHC as pyramidal OME-TIFF ``out``, then delete the store."""
    write_ome_tiff(open_slide(store / "ihc"), out, pixel_size=pixel_size, overwrite=overwrite)
    shutil.rmtree(store)
