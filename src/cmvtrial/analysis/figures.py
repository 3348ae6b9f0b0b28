"""The report's figures, drawn with matplotlib's object API (no pyplot, Agg canvas) as SVG or PNG bytes.

Why no pyplot: pyplot keeps global state and picks an interactive backend; the report runs in a
CLI, a web worker and tests side by side, so every figure is a ``matplotlib.figure.Figure`` on an
Agg canvas, rendered to bytes and dropped. SVG keeps text as text (searchable, crisp in print) and
is made reproducible (fixed ids salt, no date). Figures:

- ``km_figure`` — Kaplan–Meier curves per arm with the CI band, censoring marks and the numbers
  at risk under the axis;
- ``trajectories_figure`` — log10 CMV-DNA per subject (thin lines) and the arm mean by analysis
  visit with its CI, one panel per arm, the assay limit marked;
- ``before_after_figure`` — a marker at baseline and at the endpoint visit, per subject and arm;
- ``forest_figure`` — the ANCOVA arm effect of every marker with its CI, in units of the
  marker's residual SD so that markers on different scales share one axis;
- ``consort_figure`` — the CONSORT 2010 flow diagram.

:func:`report_figures` draws all of them from the results dict and the analysis datasets.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from cmvtrial.analysis.derivations import AnalysisDatasets

#: Arm colours (Okabe-Ito, readable by colour-blind readers and in grey print): treated, reference.
COLOURS = ("#0072B2", "#D55E00")
FORMATS = ("svg", "png")
#: Above this many subjects a panel's per-subject lines are rasterized inside the SVG (file size).
_RASTERIZE_ABOVE = 200


def _figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def render(figure: Figure, fmt: str = "svg", *, salt: str = "cmvtrial") -> bytes:
    """The figure as SVG (text kept as text, stable ids) or PNG bytes."""
    import matplotlib

    if fmt not in FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}")
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        metadata = {"Date": None} if fmt == "svg" else {"Software": "cmvtrial"}
        figure.savefig(buffer, format=fmt, metadata=metadata)
    return buffer.getvalue()


def _median(values: pd.Series) -> float:
    present = values.dropna()
    return float(present.median()) if len(present) else math.nan


def _none_to_nan(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


# ------------------------------------------------------------------------------------------------
# Kaplan-Meier


def km_figure(curves: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str], *, xlabel: str, ylabel: str,
              fmt: str = "svg") -> bytes:
    """Curves (``KaplanMeier.to_dict(curve=True)`` per arm) with CI bands and numbers at risk."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(7.5, 5.2)
    grid = figure.add_gridspec(2, 1, height_ratios=(4, 1))
    axes = figure.add_subplot(grid[0])
    table = figure.add_subplot(grid[1], sharex=axes)
    longest = max((max(c["curve"]["time"] or [0]) for c in curves.values()), default=0) or 1
    for (arm, curve), colour in zip(curves.items(), COLOURS, strict=False):
        data = curve["curve"]
        time = np.concatenate([[0.0], _none_to_nan(data["time"])])
        surv = np.concatenate([[1.0], _none_to_nan(data["surv"])])
        lower = np.concatenate([[1.0], _none_to_nan(data["lower"])])
        upper = np.concatenate([[1.0], _none_to_nan(data["upper"])])
        name = f"{labels.get(arm, arm)} (n={curve['n']}, events {curve['events']})"
        axes.step(time, surv, where="post", color=colour, linewidth=2, label=name)
        axes.fill_between(time, lower, upper, step="post", color=colour, alpha=0.15, linewidth=0)
        censored = np.concatenate([[0], np.asarray(data["n_censor"], dtype=float)]) > 0
        axes.plot(time[censored], surv[censored], "+", color=colour, markersize=8, markeredgewidth=1.5)
    axes.set_ylim(0, 1.02)
    axes.set_xlim(0, longest * 1.02)
    axes.set_ylabel(ylabel)
    axes.axhline(0.5, color="#888888", linewidth=0.8, linestyle=":")
    axes.legend(loc="upper right", frameon=False)
    axes.grid(alpha=0.3)
    axes.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ticks = [t for t in MaxNLocator(nbins=8, integer=True).tick_values(0, longest) if 0 <= t <= longest]
    table.set_xlabel(xlabel)
    table.set_yticks(range(len(curves)))
    table.set_yticklabels([labels.get(arm, arm) for arm in curves], fontsize=8)
    table.set_ylim(len(curves) - 0.5, -0.5)
    table.set_title("Number at risk", fontsize=9, loc="left")
    for row, (curve, colour) in enumerate(zip(curves.values(), COLOURS, strict=False)):
        times = _none_to_nan(curve["curve"]["time"])
        n_risk = np.asarray(curve["curve"]["n_risk"], dtype=float)
        for tick in ticks:
            index = int(np.searchsorted(times, tick, side="left"))
            at_risk = int(n_risk[index]) if index < len(times) else 0
            table.text(tick, row, str(at_risk), ha="center", va="center", fontsize=8, color=colour)
    for side in ("top", "right", "left"):
        table.spines[side].set_visible(False)
    table.tick_params(axis="y", length=0, pad=16)
    return render(figure, fmt, salt="km")


# ------------------------------------------------------------------------------------------------
# CMV-DNA trajectories


def trajectories_figure(rows: pd.DataFrame, means: Sequence[Mapping[str, Any]], arms: Sequence[str],
                        labels: Mapping[str, str], *, lloq_log10: float | None, ylabel: str, fmt: str = "svg") -> bytes:
    """Per-subject lines (``USUBJID``, ``ARM``, ``ADY``, ``AVAL``) and the arm means by visit."""
    from matplotlib.collections import LineCollection

    figure = _figure(9, 4.2)
    panels = figure.subplots(1, len(arms), sharey=True, squeeze=False)[0]
    for axes, arm, colour in zip(panels, arms, COLOURS, strict=False):
        subset = rows[rows["ARM"] == arm].sort_values(["USUBJID", "ADY"])
        segments = [np.column_stack([g["ADY"].to_numpy(float), g["AVAL"].to_numpy(float)])
                    for _, g in subset.groupby("USUBJID", sort=False)]
        many = len(segments) > _RASTERIZE_ABOVE
        lines = LineCollection(segments, colors=colour, linewidths=0.6, alpha=0.12 if many else 0.3, rasterized=many)
        axes.add_collection(lines)
        arm_means = [m for m in means if m["arm"] == arm]
        if arm_means:
            x = np.array([m["day"] for m in arm_means], dtype=float)
            y = np.array([m["mean"] for m in arm_means], dtype=float)
            low = _none_to_nan([m["lower"] for m in arm_means])
            high = _none_to_nan([m["upper"] for m in arm_means])
            axes.errorbar(x, y, yerr=[y - low, high - y], color="black", marker="o", markersize=4, linewidth=1.5,
                          capsize=2, label="mean (95% CI) by visit")
        if lloq_log10 is not None:
            axes.axhline(lloq_log10, color="#555555", linestyle="--", linewidth=1)
            axes.text(axes.get_xlim()[0], lloq_log10, " LLOQ", va="bottom", fontsize=8, color="#555555")
        axes.autoscale_view()
        axes.set_title(f"{labels.get(arm, arm)} (n={len(segments)})", fontsize=10)
        if len(rows):  # the axis follows the data, not a wide CI from a visit with two values
            axes.set_ylim(float(rows["AVAL"].min()) - 0.5, float(rows["AVAL"].max()) + 0.5)
        axes.set_xlabel("Study day (0 = randomization)")
        axes.grid(alpha=0.3)
    panels[0].set_ylabel(ylabel)
    if any(m["arm"] == arms[0] for m in means):
        panels[0].legend(loc="upper right", frameon=False, fontsize=8)
    return render(figure, fmt, salt="trajectories")


# ------------------------------------------------------------------------------------------------
# Before / after


def before_after_figure(frames: Sequence[tuple[str, pd.DataFrame]], arms: Sequence[str], labels: Mapping[str, str],
                        *, visit: str, fmt: str = "svg") -> bytes:
    """One panel per marker: each subject's baseline and ``visit`` value joined, by arm, with medians."""
    from matplotlib.collections import LineCollection

    figure = _figure(4.2 * len(frames), 4.2)
    panels = figure.subplots(1, len(frames), squeeze=False)[0]
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    for axes, (title, frame) in zip(panels, frames, strict=True):
        for k, (arm, colour) in enumerate(zip(arms, COLOURS, strict=False)):
            subset = frame[(frame["ARM"] == arm)]
            paired = subset.dropna(subset=["BASE", "AVAL"])
            x0, x1 = 3 * k, 3 * k + 1
            jitter = rng.uniform(-0.12, 0.12, len(paired))
            before, after = paired["BASE"].to_numpy(float), paired["AVAL"].to_numpy(float)
            many = len(paired) > _RASTERIZE_ABOVE
            segments = np.stack([np.column_stack([x0 + jitter, before]), np.column_stack([x1 + jitter, after])], axis=1)
            axes.add_collection(LineCollection(segments, colors=colour, alpha=0.1 if many else 0.25, linewidths=0.7,
                                               rasterized=many))
            axes.scatter(np.concatenate([x0 + jitter, x1 + jitter]), np.concatenate([before, after]), s=8, color=colour,
                         alpha=0.3 if many else 0.6, rasterized=many)
            medians = [_median(subset["BASE"]), _median(subset["AVAL"])]
            axes.plot([x0, x1], medians, color="black", linewidth=2.2, marker="s", markersize=5)
        axes.set_xticks([3 * k + d for k in range(len(arms)) for d in (0, 1)])
        axes.set_xticklabels(["Baseline", visit] * len(arms), fontsize=8)
        axes.set_title(title, fontsize=10)
        axes.grid(alpha=0.3, axis="y")

    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour, marker="o", linewidth=1, label=labels.get(arm, arm))
               for arm, colour in zip(arms, COLOURS, strict=False)]
    handles.append(Line2D([], [], color="black", marker="s", linewidth=2.2, label="median"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=8)
    return render(figure, fmt, salt=f"before_after_{visit}")


# ------------------------------------------------------------------------------------------------
# Forest plot


def forest_figure(markers: Sequence[Mapping[str, Any]], *, treated: str, reference: str, fmt: str = "svg") -> bytes:
    """Arm effect ± CI of each marker (``ancova`` result dicts), divided by the marker's residual SD."""
    usable = [m for m in markers if "estimate" in m["ancova"] and m["ancova"]["sigma"]]
    figure = _figure(8, 1.2 + 0.38 * max(len(usable), 1))
    axes = figure.add_subplot()
    for row, marker in enumerate(usable):
        fit = marker["ancova"]
        sd = fit["sigma"]
        estimate, low, high = fit["estimate"] / sd, fit["lower"] / sd, fit["upper"] / sd
        colour = COLOURS[0] if (fit.get("p_adjusted") or 1) < 1 - fit["conf_level"] else "#333333"
        axes.plot([low, high], [row, row], color=colour, linewidth=2)
        axes.plot([estimate], [row], "s", color=colour, markersize=6)
        p = fit.get("p_adjusted")
        axes.text(1.01, row, "" if p is None else f"p adj {p:.3g}", transform=axes.get_yaxis_transform(),
                  va="center", fontsize=8)
    if not usable:
        axes.text(0.5, 0.5, "No marker could be analysed", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return render(figure, fmt, salt="forest")
    axes.axvline(0, color="#888888", linewidth=1)
    axes.set_yticks(range(len(usable)))
    axes.set_yticklabels([m["label"] for m in usable], fontsize=8)
    axes.set_ylim(len(usable) - 0.5, -0.5)
    axes.set_xlabel(f"Adjusted difference in change (residual SD units)\n{treated} minus {reference}", fontsize=9)
    axes.grid(alpha=0.3, axis="x")
    return render(figure, fmt, salt="forest")


# ------------------------------------------------------------------------------------------------
# CONSORT


def _box(axes: Axes, x: float, y: float, text: str, width: float = 0.36) -> None:
    from matplotlib.patches import FancyBboxPatch

    lines = text.count("\n") + 1
    height = 0.0145 * lines + 0.014
    axes.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.005",
                                  facecolor="white", edgecolor="#333333", linewidth=1))
    axes.text(x, y, text, ha="center", va="center", fontsize=7.5, wrap=False)


def _arrow(axes: Axes, start: tuple[float, float], end: tuple[float, float]) -> None:
    axes.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "color": "#333333", "linewidth": 1})


def _reasons(reasons: Mapping[str, Any], limit: int = 4) -> str:
    items = sorted(((k, v["n"] if isinstance(v, Mapping) else v) for k, v in reasons.items()), key=lambda kv: -kv[1])
    shown = [f"  {k}: {n}" for k, n in items[:limit]]
    if len(items) > limit:
        shown.append(f"  other: {sum(n for _, n in items[limit:])}")
    return "\n".join(shown)


def consort_figure(consort: Mapping[str, Any], arms: Sequence[str], labels: Mapping[str, str],
                   fmt: str = "svg") -> bytes:
    """The CONSORT 2010 flow diagram from :func:`report_tables.consort_counts`."""
    figure = _figure(8.5, 9, layout=None)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.axis("off")
    _box(axes, 0.5, 0.94, f"Assessed for eligibility (n={consort['assessed']})", width=0.3)
    excluded = [f"Excluded (n={consort['excluded']})", f"Not meeting criteria (n={consort['not_eligible']})"]
    detail = _reasons(consort["not_eligible_by_criterion"])
    if detail:
        excluded.append(detail)
    excluded += [f"Declined to participate (n={consort['declined_consent']})",
                 f"Other reasons (n={consort['other_reasons']})"]
    _box(axes, 0.82, 0.82, "\n".join(excluded), width=0.32)
    _arrow(axes, (0.5, 0.925), (0.5, 0.72))
    axes.plot([0.5, 0.66], [0.82, 0.82], color="#333333", linewidth=1)
    _box(axes, 0.5, 0.70, f"Randomized (n={consort['randomized']})", width=0.3)
    for arm, x in zip(arms, (0.25, 0.75), strict=False):
        allocation, follow, analysis = consort["allocation"][arm], consort["follow_up"][arm], consort["analysis"][arm]
        _arrow(axes, (0.5, 0.685), (x, 0.615))
        _box(axes, x, 0.57, "\n".join([
            f"Allocated to {labels.get(arm, arm)}", f"(n={allocation['allocated']})",
            f"Received allocated intervention (n={allocation['received_allocated']})",
            f"Did not receive it (n={allocation['did_not_receive'] + allocation['received_other_arm']})"]), width=0.44)
        _arrow(axes, (x, 0.52), (x, 0.44))
        follow_text = [f"Lost to follow-up (n={follow['lost_to_follow_up']})",
                       f"Discontinued (n={follow['discontinued']})"]
        if follow["discontinued_reasons"]:
            follow_text.append(_reasons(follow["discontinued_reasons"]))
        follow_text.append(f"Completed (n={follow['completed']}), ongoing (n={follow['ongoing']})")
        _box(axes, x, 0.37, "\n".join(follow_text), width=0.44)
        _arrow(axes, (x, 0.30), (x, 0.22))
        analysed = [f"Analysed, {consort['population']} (n={analysis['analysed']})",
                    f"Excluded from analysis (n={analysis['excluded']})"]
        if analysis["excluded_reasons"]:
            analysed.append(_reasons(analysis["excluded_reasons"]))
        _box(axes, x, 0.16, "\n".join(analysed), width=0.44)
    for y, label in ((0.94, "Enrollment"), (0.57, "Allocation"), (0.37, "Follow-up"), (0.16, "Analysis")):
        axes.text(0.005, y, label, rotation=90, va="center", fontsize=8, color="#0072B2", fontweight="bold")
    return render(figure, fmt, salt="consort")


# ------------------------------------------------------------------------------------------------
# All figures of the report


def report_figures(results: Mapping[str, Any], datasets: AnalysisDatasets, *, fmt: str = "svg") -> dict[str, bytes]:
    """Every figure of the report, keyed ``consort``, ``km_<endpoint>``, ``trajectories_<endpoint>``,
    ``change_<endpoint>`` and ``forest``."""
    from cmvtrial.analysis.adsl import population_frame
    from cmvtrial.analysis.derivations import CMV_PARAMCD, change_at_visit

    setup = datasets.setup
    arms = [results["treated_arm"], results["reference_arm"]]
    labels = {arm["id"]: arm["label"] for arm in results["arms"]}
    chosen = population_frame(datasets.adsl, results["trial"]["population"])
    figures = {"consort": consort_figure(results["consort"], arms, labels, fmt)}
    cmv_rows = datasets.adlb[datasets.adlb["PARAMCD"] == CMV_PARAMCD].merge(chosen[["USUBJID", "ARM"]], on="USUBJID")
    cmv_rows = cmv_rows[(cmv_rows["ADY"] >= 0) | (cmv_rows["ABLFL"] == "Y")]
    all_markers: list[Mapping[str, Any]] = []
    for endpoint in results["endpoints"]:
        result = endpoint["result"]
        if "error" in result:
            continue
        key = endpoint["id"]
        if endpoint["analysis"] == "kaplan_meier_logrank_cox":
            curves = {arm: result["km"][arm] for arm in arms if arm in result["km"]}  # colours follow the arms
            figures[f"km_{key}"] = km_figure(curves, labels, xlabel="Days since the first positive CMV-DNA",
                                             ylabel="Proportion still viremic", fmt=fmt)
            if not any(e["analysis"] == "mixed_model_log10_decline" for e in results["endpoints"]):
                # No decline endpoint (NCT04225780): the trajectories go with the time to negativity.
                figures[f"trajectories_{key}"] = trajectories_figure(
                    cmv_rows, result["cmv_visit_means"], arms, labels, lloq_log10=math.log10(setup.lloq),
                    ylabel=f"log10 CMV-DNA ({setup.cmv_unit})", fmt=fmt)
        elif endpoint["analysis"] == "mixed_model_log10_decline":
            figures[f"trajectories_{key}"] = trajectories_figure(
                cmv_rows, result["visit_means"], arms, labels, lloq_log10=math.log10(setup.lloq),
                ylabel=f"log10 CMV-DNA ({setup.cmv_unit})", fmt=fmt)
        elif endpoint["analysis"] == "ancova_change_from_baseline":
            markers = result["markers"]
            all_markers.extend(markers)
            if len(markers) <= 2:
                frames = [(m["label"], chosen[["USUBJID", "ARM"]].join(
                    change_at_visit(datasets.adlb, m["paramcd"], result["visit"]), on="USUBJID")) for m in markers]
                figures[f"change_{key}"] = before_after_figure(frames, arms, labels, visit=result["visit"], fmt=fmt)
            else:
                figures[f"change_{key}"] = forest_figure(markers, treated=labels[arms[0]], reference=labels[arms[1]],
                                                         fmt=fmt)
    if all_markers:
        figures["forest"] = forest_figure(all_markers, treated=labels[arms[0]], reference=labels[arms[1]], fmt=fmt)
    return figures
