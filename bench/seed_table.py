"""Mean +- sd over seeds of `vstain evaluate --json` results, as the tables of docs/models/.

Models named ``ROW-s0``, ``ROW-s1``, ... (the checkpoint's file name) form one row; the sd is the
sample sd (n - 1). Each seed's figures follow the table, so a reader sees the spread.
Run: ``.venv/bin/python bench/seed_table.py RESULTS.json [...] [--metrics psnr_aligned ...]``.
"""

import argparse
import json
import re
from collections import defaultdict

import numpy as np

DEFAULT_METRICS = ["psnr_aligned", "ssim_aligned", "dab_correlation_aligned", "object_f1",
                   "cell_f1_virtual"]  # fmt: skip
SEED = re.compile(r"^(?P<row>.+)-s(?P<seed>\d+)$")


def rows_by_seed(results: dict[str, dict]) -> dict[str, dict[int, dict]]:
    """``{row: {seed: scores}}`` from ``{name: scores}``; names without ``-sN`` are skipped."""
    rows: dict[str, dict[int, dict]] = defaultdict(dict)
    for name, scores in results.items():
        match = SEED.match(name)
        if match:
            rows[match["row"]][int(match["seed"])] = scores
    return dict(rows)


def summary(seeds: dict[int, dict], metric: str) -> tuple[float, float]:
    """Mean and sample sd of ``metric`` over the seeds (sd nan for one seed)."""
    values = np.array([scores[metric] for scores in seeds.values()], dtype=float)
    return values.mean(), values.std(ddof=1) if len(values) > 1 else float("nan")


def markdown(rows: dict[str, dict[int, dict]], metrics: list[str]) -> str:
    """The table (one line per row, ``mean +- sd``) and each row's per-seed figures."""
    lines = [f"| row (seeds) | {' | '.join(metrics)} |", "| --- " * (len(metrics) + 1) + "|"]
    for row, seeds in rows.items():
        cells = [f"{m:.3f} +- {s:.3f}" for m, s in (summary(seeds, k) for k in metrics)]
        lines.append(f"| {row} ({len(seeds)}) | {' | '.join(cells)} |")
    lines.append("")
    for row, seeds in rows.items():
        per_seed = ", ".join(
            f"s{seed} " + " / ".join(f"{seeds[seed][k]:.3f}" for k in metrics)
            for seed in sorted(seeds)
        )
        lines.append(f"- {row}: {per_seed}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="`vstain evaluate --json` files")
    parser.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS)
    args = parser.parse_args()
    results: dict[str, dict] = {}
    for path in args.results:
        with open(path) as f:
            results.update(json.load(f))
    rows = rows_by_seed(results)
    if not rows:
        raise SystemExit("No model named ROW-sN here: name checkpoints ROW-s0.safetensors ...")
    print(markdown(rows, args.metrics))


if __name__ == "__main__":
    main()
