"""Bar charts as server-rendered SVG geometry (no script, no library): the view computes the
bars, ``templates/chart.html`` draws them with classes the stylesheet colours."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 720
HEIGHT = 160
LABEL_ROOM = 18  # pixels under the bars for the axis labels


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True)
class Chart:
    title: str
    bars: list[Bar]
    peak: int
    width: int = WIDTH
    height: int = HEIGHT
    first_label: str = ""
    last_label: str = ""


def bar_chart(title: str, points: Sequence[tuple[str, int]]) -> Chart:
    """One bar per (label, value), scaled so the largest fills the height."""
    peak = max((v for _, v in points), default=0)
    plot = HEIGHT - LABEL_ROOM
    slot = WIDTH / max(len(points), 1)
    bars = [
        Bar(x=round(i * slot + 1, 2), y=round(plot - (v / peak * plot if peak else 0), 2),
            width=round(max(slot - 2, 1), 2), height=round(v / peak * plot if peak else 0, 2),
            label=label, value=v)
        for i, (label, v) in enumerate(points)
    ]
    return Chart(title, bars, peak, first_label=points[0][0] if points else "",
                 last_label=points[-1][0] if points else "")
