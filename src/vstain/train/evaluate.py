"""Evaluate a model on a paired dataset, and print the results of several models as a table."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from vstain.color import dab_od
from vstain.errors import DatasetError
from vstain.metrics.cells import Detection, cell_calls, match_objects, positive_cells, score_calls
from vstain.metrics.image import dab_correlation, psnr, ssim
from vstain.metrics.learned import LearnedMetrics
from vstain.metrics.positivity import positivity_error


def to_uint8(images: np.ndarray) -> np.ndarray:
    """B x 3 x H x W floats in [0, 1] -> B x H x W x 3 uint8 (rounded)."""
    return (np.asarray(images).transpose(0, 2, 3, 1) * 255).round().clip(0, 255).astype(np.uint8)


def pair_scores(virtual: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Per-image scores of a virtual IHC against the real one (both uint8 RGB, one shape)."""
    err = positivity_error(virtual, real)
    return {
        "psnr": psnr(virtual, real),
        "ssim": ssim(virtual, real),
        "dab_correlation": dab_correlation(virtual, real),
        "percent_positive_error": err["percent_positive_error"],
        "h_score_error": err["h_score_error"],
    }


def _item_batches(dataset, batch_size: int, limit: int | None) -> Iterator[list[dict]]:
    """Consecutive items, up to ``batch_size`` of one image size per batch."""
    batch: list[dict] = []
    for i in range(len(dataset) if limit is None else min(limit, len(dataset))):
        item = dataset[i]
        if batch and (len(batch) == batch_size or batch[0]["he"].shape != item["he"].shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _finite_mean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values (NaN when there are none)."""
    arr = np.asarray(values, np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _summary(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means of the per-image scores; positivity errors as mean absolute error and mean bias."""
    out = {k: _finite_mean([r[k] for r in rows]) for k in ("psnr", "ssim", "dab_correlation")}
    for key in ("percent_positive", "h_score"):
        errors = [r[f"{key}_error"] for r in rows]
        out[f"{key}_mae"] = _finite_mean(np.abs(errors))
        out[f"{key}_bias"] = _finite_mean(errors)
    return out


def _detection_scores(prefix: str, det: Detection, suffix: str = "") -> dict[str, float]:
    return {
        f"{prefix}_precision{suffix}": det.precision,
        f"{prefix}_recall{suffix}": det.recall,
        f"{prefix}_f1{suffix}": det.f1,
    }


class _TruthCalls:
    """Per-cell positive calls of the virtual and real IHC against the simulator's truth."""

    def __init__(self, folder: Path):
        if not folder.is_dir():
            raise DatasetError(
                f"Truth folder {folder} does not exist. Give the simulator's truth/<split> folder "
                "of this dataset, or no truth."
            )
        self.folder = folder
        self.calls: dict[str, list[np.ndarray]] = {"virtual": [], "real": [], "truth": []}
        self.aligned: list[dict[str, float]] = []

    def add(self, name: str, virtual: np.ndarray, real: np.ndarray) -> None:
        path = self.folder / f"{name}.npz"
        if not path.is_file():
            raise DatasetError(
                f"{path} is missing: every image of the dataset needs its truth file. Use the "
                "truth folder written with this dataset."
            )
        t = np.load(path)
        if t["nuclei"].shape != virtual.shape[:2]:
            raise DatasetError(
                f"{path} describes a {t['nuclei'].shape} image but the item is "
                f"{virtual.shape[:2]}: evaluate whole images (no crop) against truth."
            )
        present = t["cell_in_he"] & t["cell_in_ihc"]
        ids = t["cell_id"][present]
        for key, image in (("virtual", virtual), ("real", real)):
            self.calls[key].append(cell_calls(dab_od(image), t["nuclei"], ids))
        self.calls["truth"].append(t["cell_positive"][present])
        if "ihc_aligned" in t:
            self.aligned.append(pair_scores(virtual, t["ihc_aligned"]))

    def result(self) -> dict[str, float]:
        truth = np.concatenate(self.calls["truth"]) if self.calls["truth"] else np.zeros(0, bool)
        out: dict[str, float] = {"cells": int(truth.size)}
        for key in ("virtual", "real"):
            called = np.concatenate(self.calls[key]) if self.calls[key] else np.zeros(0, bool)
            out |= _detection_scores("cell", score_calls(called, truth), f"_{key}")
        if self.aligned:
            out |= {f"{k}_aligned": v for k, v in _summary(self.aligned).items()}
        return out


def evaluate(
    model,
    dataset,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 8,
    truth: str | Path | None = None,
    limit: int | None = None,
    learned: bool = True,
    options: dict | None = None,
) -> dict:
    """Per-metric means of ``model``'s virtual IHC against the real IHC over a paired ``dataset``.

    Items are dicts with "he" and "ihc" (3 x H x W float in [0, 1]) and, with ``truth``, "name".
    Results: ``images``; means of ``psnr`` (identical images: `PSNR_CAP`), ``ssim`` and
    ``dab_correlation`` (images with a constant DAB map are left out); ``percent_positive_mae`` /
    ``_bias`` and ``h_score_mae`` / ``_bias`` (pixel positivity, virtual - real); object-level
    positive-cell ``object_precision`` / ``_recall`` / ``_f1`` of the virtual against the real
    IHC's positive cells, counts pooled over images. With ``truth`` (the simulator's
    ``truth/<split>`` folder): per-cell ``cell_precision_virtual`` ... ``cell_f1_real`` and
    ``cells``; for adjacent-section data also ``psnr_aligned``, ``ssim_aligned`` ... of the
    virtual IHC against the pixel-aligned IHC of the H&E section. With ``learned``: ``fid``,
    ``kid`` and ``lpips``, each a float or an unavailable report. ``limit`` scores only the first
    items; ``options`` go to the model's ``predict``.
    """
    from vstain.models.device import choose_device, predict_batch

    dev = device if isinstance(device, torch.device) else choose_device(device)
    model.to(dev)
    truth_calls = _TruthCalls(Path(truth)) if truth is not None else None
    extra = LearnedMetrics(dev) if learned else None
    rows, objects = [], Detection(0, 0, 0)
    for items in _item_batches(dataset, batch_size, limit):
        he = torch.stack([it["he"] for it in items])
        virtual = to_uint8(predict_batch(model, he, dev, **(options or {}))["ihc"])
        real = to_uint8(torch.stack([it["ihc"] for it in items]).numpy())
        for item, v, r in zip(items, virtual, real, strict=True):
            rows.append(pair_scores(v, r))
            objects += match_objects(positive_cells(v), positive_cells(r))
            if truth_calls is not None:
                truth_calls.add(item["name"], v, r)
        if extra is not None:
            extra.add(*(torch.from_numpy(x).permute(0, 3, 1, 2) / 255 for x in (virtual, real)))
    if not rows:
        raise DatasetError("The dataset to evaluate on has no items.")
    result: dict = {"images": len(rows), **_summary(rows), **_detection_scores("object", objects)}
    if truth_calls is not None:
        result |= truth_calls.result()
    if extra is not None:
        result |= extra.result()
    return result


def _cell(value) -> str:
    if isinstance(value, dict):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(results: dict[str, dict]) -> str:
    """Results of ``evaluate`` by model name as a text table: models as rows, metrics as columns.

    Unavailable metrics show as ``n/a`` with their reasons listed below the table; metrics a model
    lacks show as ``-``.
    """
    metrics = list(dict.fromkeys(k for r in results.values() for k in r))
    header = ["model", *metrics]
    rows = [[name, *(_cell(r.get(m, "-")) for m in metrics)] for name, r in results.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    reasons = {
        f"{m}: {v['reason']}" for r in results.values() for m, v in r.items() if isinstance(v, dict)
    }
    return "\n".join(lines + [f"n/a {reason}" for reason in sorted(reasons)])
