"""Many slides on dask.distributed: chunk-aligned blocks of tiles, interleaved across slides,
written by workers that each keep one loaded model; resumable through each store's done-map."""

from vstain.batch.run import SUMMARY_NAME, BatchProgress, stain_slides
from vstain.batch.summary import BatchSummary, SlideReport

__all__ = ["SUMMARY_NAME", "BatchProgress", "BatchSummary", "SlideReport", "stain_slides"]
