"""The one road from a slide to a virtual stain: load a model once, plan a run (every check of
the request in one place), run it through the tile engine. The CLI, the widget job and batch all
take it."""

from vstain.pipeline.destination import Destination, destination
from vstain.pipeline.loaded_model import LoadedModel, ModelCache, load_model
from vstain.pipeline.outputs import OUTPUT_SPECS, output_specs
from vstain.pipeline.plan import RunPlan, check_request, choose_level, model_settings, plan_run
from vstain.pipeline.run import convert_to_ome_tiff, run_plan, stain_slide

__all__ = [
    "OUTPUT_SPECS",
    "Destination",
    "LoadedModel",
    "ModelCache",
    "RunPlan",
    "check_request",
    "choose_level",
    "convert_to_ome_tiff",
    "destination",
    "load_model",
    "model_settings",
    "output_specs",
    "plan_run",
    "run_plan",
    "stain_slide",
]
