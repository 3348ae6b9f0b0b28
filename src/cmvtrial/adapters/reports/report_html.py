"""The trial report as one self-contained HTML file (figures inline as SVG) and its JSON twin.

Why self-contained: the report is sent to sponsors, monitors and ethics committees and read
offline, printed, archived. So there is nothing to fetch — the CSS is in the page, every figure is
an inline SVG (text stays text, crisp in print) — and the page is printable (a print stylesheet
hides navigation and keeps tables and figures on one page each).

This adapter only renders: the numbers come from :func:`cmvtrial.analysis.report_results.build_results`
(the same dict is written as the JSON), the figures from :mod:`cmvtrial.analysis.figures`, the
layout from ``templates/report.html.j2``. :func:`build_report` runs the whole chain and reports
each step to a progress callback (the CLI's progress bar).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.analysis.trial_data import TrialData

TEMPLATE = "report.html.j2"
Progress = Callable[[str], None]
_XML_PROLOGUE = re.compile(r"^\s*<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)


@dataclass(frozen=True)
class Report:
    """The rendered report and the results it shows."""

    html: str
    results: dict[str, Any]

    def json(self) -> str:
        return json.dumps(self.results, indent=1, ensure_ascii=False) + "\n"


def report_steps(data: TrialData) -> list[str]:
    """Every step :func:`build_report` reports, in order."""
    from cmvtrial.analysis.report_results import report_steps as analysis_steps

    return [*analysis_steps(data), "figures", "html"]


def build_report(
    data: TrialData, *, population: str = "itt", generated_on: date | None = None, progress: Progress | None = None
) -> Report:
    """Derive, analyse, draw and render the report of ``data`` for ``population``."""
    from cmvtrial.analysis.derivations import derive_datasets
    from cmvtrial.analysis.figures import report_figures
    from cmvtrial.analysis.report_results import build_results

    tick = progress or (lambda step: None)
    datasets = derive_datasets(data)
    results = build_results(data, population=population, generated_on=generated_on, datasets=datasets, progress=tick)
    figures = report_figures(results, datasets)
    tick("figures")
    html = render_html(results, figures)
    tick("html")
    return Report(html=html, results=results)


def inline_svg(svg: bytes) -> str:
    """An SVG document as an element to place in HTML (without its XML prologue)."""
    return _XML_PROLOGUE.sub("", svg.decode("utf-8"), count=1)


# -- number formatting (template filters) ----------------------------------------------------------


def fmt_number(value: Any, digits: int = 2) -> str:
    """A number to ``digits`` decimals; "–" for none (not reached, not estimable)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def fmt_p(value: Any) -> str:
    """A p-value: three significant digits, "< 0.001" below that."""
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def fmt_ci(pair: Any, digits: int = 2) -> str:
    """``(lower, upper)`` with "not reached" for a missing limit."""
    if not pair:
        return "–"
    lower, upper = pair
    show = lambda v: "NR" if v is None else fmt_number(v, digits)  # noqa: E731
    return f"{show(lower)} to {show(upper)}"


def fmt_mean_sd(stats: Mapping[str, Any], digits: int = 2) -> str:
    if not stats or not stats.get("n"):
        return "–"
    sd = "" if stats.get("sd") is None else f" ({fmt_number(stats['sd'], digits)})"
    return f"{fmt_number(stats['mean'], digits)}{sd}"


def fmt_median_iqr(stats: Mapping[str, Any], digits: int = 2) -> str:
    if not stats or not stats.get("n"):
        return "–"
    return f"{fmt_number(stats['median'], digits)} [{fmt_number(stats['q1'], digits)}; {fmt_number(stats['q3'], digits)}]"


def fmt_count(cell: Mapping[str, Any] | None) -> str:
    """``n (x.x%)``."""
    if not cell:
        return "0"
    percent = cell.get("percent")
    return f"{cell.get('n', cell.get('subjects', 0))}" + ("" if percent is None else f" ({percent:.1f}%)")


def render_html(results: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    """The report page from the results dict and the figures (SVG bytes by key)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
    from markupsafe import Markup

    environment = Environment(
        loader=PackageLoader("cmvtrial.adapters.reports", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(num=fmt_number, p=fmt_p, ci=fmt_ci, mean_sd=fmt_mean_sd, median_iqr=fmt_median_iqr,
                               count=fmt_count)
    labels = {arm["id"]: arm["label"] for arm in results["arms"]}
    arms = [results["treated_arm"], results["reference_arm"]]
    svgs = {key: Markup(inline_svg(svg)) for key, svg in figures.items()}
    return environment.get_template(TEMPLATE).render(r=results, arms=arms, labels=labels, figures=svgs)
