"""Plot one logged loss (e.g. ASP-DGRank's adaptive ``diffusion_T``) of several training runs.

Reads the ``<checkpoint>.losses.csv`` files ``vstain train`` writes and draws the named series
with the plugin's own :class:`vstain.napari.line_plot.LinePlot` (no plotting library needed),
averaged over ``--every`` steps.

QT_QPA_PLATFORM=offscreen python docs/make_training_plots.py --loss diffusion_T \
    --title "adaptive T" --out docs/images/asp_dgrank_T.png run1.losses.csv run2.losses.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QApplication

from vstain.napari.line_plot import LinePlot
from vstain.train.loss_log import read_loss_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--loss", required=True, help="logged name, e.g. diffusion_T or d")
    parser.add_argument("--title", default=None)
    parser.add_argument("--every", type=int, default=10, help="average over this many steps")
    parser.add_argument("--log", action="store_true", help="log10 y axis (losses)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    plot = LinePlot(args.title or args.loss, log=args.log)
    plot.resize(720, 300)
    for path in args.logs:
        steps, values = read_loss_log(path).get(args.loss, ([], []))
        label = path.name.removesuffix(".losses.csv")
        k = args.every
        for i in range(0, len(steps) - k + 1, k):
            plot.add(steps[i + k - 1], {label: float(np.mean(values[i : i + k]))})
    plot.grab().save(str(args.out))
    app.processEvents()
    print(f"{args.out}: {plot.points()} points")


if __name__ == "__main__":
    main()
