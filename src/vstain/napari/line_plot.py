"""A small live line plot (one polyline per series) drawn with QPainter: enough for loss curves
in a dock widget without pulling in a plotting library."""

from __future__ import annotations

import itertools
import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

COLOURS = ("#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176")
MARGIN = 28


class LinePlot(QWidget):
    """Series of (x, y) points with a legend; ``log`` plots log10(y) (losses); ``own_scale``
    stretches each series to its own range (PSNR in dB beside SSIM in 0..1), the legend giving
    the values."""

    def __init__(self, title: str, log: bool = False, own_scale: bool = False):
        super().__init__()
        self.title, self.log, self.own_scale = title, log, own_scale
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def add(self, x: float, values: dict[str, float]) -> None:
        """Append one point per named value (non-finite values are skipped) and redraw."""
        for name, y in values.items():
            if isinstance(y, int | float) and math.isfinite(y) and (y > 0 or not self.log):
                self.series.setdefault(name, []).append((float(x), float(y)))
        self.update()

    def clear(self) -> None:
        self.series = {}
        self.update()

    def points(self) -> int:
        """How many points are plotted in all."""
        return sum(len(s) for s in self.series.values())

    def _value(self, y: float) -> float:
        return math.log10(y) if self.log else y

    def _range(self, points: list[tuple[float, float]]) -> tuple[float, float]:
        ys = [self._value(p[1]) for p in points]
        y0, y1 = min(ys), max(ys)
        return (y0 - 0.5, y1 + 0.5) if y1 - y0 < 1e-9 else (y0, y1)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor("#262930"))
        painter.setPen(QColor("#d0d0d0"))
        painter.drawText(6, 14, self.title + (" (log scale)" if self.log else ""))
        points = [p for s in self.series.values() for p in s]
        if not points:
            painter.drawText(6, 34, "no points yet")
            return
        xs = [p[0] for p in points]
        x0, x1 = min(xs), max(max(xs), min(xs) + 1)
        w, h = self.width() - 2 * MARGIN, self.height() - 2 * MARGIN
        painter.drawText(6, self.height() - 6, f"step {x0:g} - {x1:g}")
        if not self.own_scale:  # one y range for all series: label its ends
            lo, hi = (10**v if self.log else v for v in self._range(points))
            painter.drawText(MARGIN + 3, MARGIN + 12, f"{hi:.3g}")
            painter.drawText(MARGIN + 3, MARGIN + h - 3, f"{lo:.3g}")
        for k, (name, series) in enumerate(self.series.items()):
            y0, y1 = self._range(series if self.own_scale else points)

            def at(x: float, y: float, y0=y0, y1=y1) -> QPointF:
                return QPointF(
                    MARGIN + (x - x0) / (x1 - x0) * w,
                    MARGIN + (1 - (self._value(y) - y0) / (y1 - y0)) * h,
                )

            colour = QColor(COLOURS[k % len(COLOURS)])
            painter.setPen(QPen(colour, 1.5))
            for a, b in itertools.pairwise(series):
                painter.drawLine(at(*a), at(*b))
            if len(series) == 1:
                painter.drawEllipse(at(*series[0]), 2, 2)
            painter.drawText(self.width() - 120, 14 + 14 * k, f"{name} {series[-1][1]:.3g}")
        painter.setPen(QPen(QColor("#808080"), 1, Qt.PenStyle.DotLine))
        painter.drawRect(MARGIN, MARGIN, w, h)
