"""The subject page's CMV-DNA plot: a small server-rendered SVG, drawn here by hand.

Why not matplotlib: one line of a few points is a few dozen SVG elements; drawing them here keeps
the page fast and the markup accessible (a title and a description the screen reader reads, and the
same numbers in a table beside it). The load axis is logarithmic (viral loads span decades); a
result below the limit of quantification or not detected is drawn on the limit line as an open
circle, since it has no number. Colours come from the stylesheet (classes), never inline styles,
which the Content-Security-Policy forbids.
"""

from __future__ import annotations

import math
from datetime import date

from markupsafe import Markup, escape

from cmvtrial.services.visit_data import CmvSeries

WIDTH, HEIGHT = 560, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40


def _decades(series: CmvSeries) -> tuple[int, int]:
    loads = [point.load for point in series.points if point.load is not None and point.load > 0]
    values = [*loads, series.lloq]
    low = math.floor(math.log10(min(values))) if values else 2
    high = math.ceil(math.log10(max(values))) if values else 6
    return low, max(high, low + 1)


def cmv_plot_svg(series: CmvSeries, *, unit_label: str, eot_label: str = "end of treatment") -> Markup:
    """The series as an inline SVG element (empty when there is nothing to draw)."""
    if not series.points:
        return Markup("")
    low, high = _decades(series)
    last_day = max([point.study_day for point in series.points] + [7])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(day: int) -> float:
        return LEFT + plot_w * max(day, 0) / last_day

    def y(load: float) -> float:
        share = (math.log10(max(load, 10.0 ** low)) - low) / (high - low)
        return TOP + plot_h * (1 - share)

    parts = [
        f'<svg class="cmv-plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="cmv-plot-title cmv-plot-desc"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="cmv-plot-title">CMV-DNA of subject {escape(series.subject)} over time</title>',
        f'<desc id="cmv-plot-desc">{len(series.points)} results in {escape(unit_label)}, log scale; '
        f'the dashed line is the limit of quantification ({series.lloq:g}). The table below lists them.</desc>',
    ]
    for decade in range(low, high + 1):
        level = y(10.0 ** decade)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{level:.1f}" x2="{WIDTH - RIGHT}" y2="{level:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{level + 4:.1f}" text-anchor="end">10^{decade}</text>')
    step = 7 if last_day <= 84 else 28
    for day in range(0, last_day + 1, step):
        parts.append(f'<text class="tick" x="{x(day):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{day}</text>')
    parts.append(f'<text class="axis-label" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                 'study day</text>')
    parts.append(f'<text class="axis-label" x="14" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">{escape(unit_label)}</text>')
    limit = y(series.lloq)
    parts.append(f'<line class="lloq" x1="{LEFT}" y1="{limit:.1f}" x2="{WIDTH - RIGHT}" y2="{limit:.1f}"/>')
    if series.end_of_treatment is not None:
        eot = x((series.end_of_treatment - series.randomized_on).days)
        parts.append(f'<line class="eot" x1="{eot:.1f}" y1="{TOP}" x2="{eot:.1f}" y2="{TOP + plot_h}"/>')
        parts.append(f'<text class="tick" x="{eot - 4:.1f}" y="{TOP + 10}" text-anchor="end">{escape(eot_label)}</text>')
    coordinates = [(x(p.study_day), y(p.load if p.load is not None and not p.negative else series.lloq), p)
                   for p in series.points]
    path = " ".join(f"{'M' if i == 0 else 'L'}{cx:.1f},{cy:.1f}" for i, (cx, cy, _) in enumerate(coordinates))
    parts.append(f'<path class="series" d="{path}"/>')
    for cx, cy, point in coordinates:
        shape = "negative" if point.negative else "positive"
        parts.append(f'<circle class="point {shape}" cx="{cx:.1f}" cy="{cy:.1f}" r="4.5">'
                     f'<title>{_point_text(point.sample_date, point.load, point.category)}</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _point_text(on: date, load: float | None, category: str | None) -> str:
    shown = f"{load:g}" if load is not None else (category or "").replace("_", " ")
    return str(escape(f"{on.isoformat()}: {shown}"))
