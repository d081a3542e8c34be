"""Evaluate a model on a paired dataset: pixel metrics always, cell metrics with simulator truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vstain.color import dab_od
from vstain.metrics.cells import cell_calls, score_calls
from vstain.metrics.difference import positivity_error
from vstain.metrics.image import dab_correlation, psnr, ssim


def _uint8(t) -> np.ndarray:
    return (t.permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)


def evaluate(
    model, dataset, *, device="auto", truth_dir: Path | None = None, limit: int | None = None
) -> dict:
    """Mean PSNR, SSIM, DAB correlation and positivity error of the model's IHC over ``dataset``;
    with ``truth_dir`` (the simulator's ``truth/<split>``) also positive-cell precision / recall /
    F1 of the virtual IHC and, as the ceiling of the same rule, of the real IHC."""
    from vstain.models import choose_device

    dev = choose_device(device)
    model.to(dev).eval()
    rows, calls = [], {"virtual": [], "real": [], "truth": []}
    for i in range(len(dataset) if limit is None else min(limit, len(dataset))):
        item = dataset[i]
        fake = _uint8(model.predict(item["he"][None].to(dev)).ihc[0])
        real = _uint8(item["ihc"])
        err = positivity_error(fake, real)
        rows.append(
            {
                "psnr": psnr(fake, real),
                "ssim": ssim(fake, real),
                "dab_correlation": dab_correlation(fake, real),
                "percent_positive_error": err["percent_positive_error"],
                "h_score_error": err["h_score_error"],
            }
        )
        truth_file = truth_dir / f"{item['name']}.npz" if truth_dir else None
        if truth_file is not None and truth_file.exists():
            t = np.load(truth_file)
            present = t["cell_in_he"] & t["cell_in_ihc"]
            ids = t["cell_id"][present]
            for key, image in (("virtual", fake), ("real", real)):
                calls[key].append(cell_calls(dab_od(image), t["nuclei"], ids))
            calls["truth"].append(t["cell_positive"][present])
    result = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]} if rows else {}
    result["images"] = len(rows)
    if calls["truth"]:
        truth = np.concatenate(calls["truth"])
        for key in ("virtual", "real"):
            det = score_calls(np.concatenate(calls[key]), truth)
            result[f"cell_f1_{key}"] = det.f1
            result[f"cell_precision_{key}"] = det.precision
            result[f"cell_recall_{key}"] = det.recall
        result["cells"] = int(truth.size)
    return result


def format_table(results: dict[str, dict]) -> str:
    """Metrics as rows, models as columns."""
    names = list(results)
    metrics = sorted({k for r in results.values() for k in r})
    lines = ["metric".ljust(24) + "".join(n[:18].rjust(20) for n in names)]
    for m in metrics:
        values = [results[n].get(m, "-") for n in names]
        lines.append(m.ljust(24) + "".join(
            (f"{v:.3f}" if isinstance(v, float) else str(v)).rjust(20) for v in values))
    return "\n".join(lines)
