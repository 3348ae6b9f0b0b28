"""The power curve of a :class:`~cmvtrial.simulation.power.PowerReport`: power against patients per arm.

One line per endpoint and test with ±1.96 Monte-Carlo standard errors, the target power and alpha
marked; a line that is a type-I error under the scenario is dashed. matplotlib's object API on an
Agg canvas (no pyplot state), so it is safe in any process.
"""

from __future__ import annotations

from cmvtrial.errors import InvalidInput
from cmvtrial.simulation.power import TESTS, PowerReport

#: Figure formats ``power_figure`` renders.
FIGURE_FORMATS = ("png", "svg", "pdf")


def power_figure(report: PowerReport, fmt: str = "png") -> bytes:
    """The power curve: power against patients per arm, one line per endpoint and test, with
    ±1.96 Monte-Carlo standard errors, the target power and alpha marked; a line that is a type-I
    error under the scenario is dashed. matplotlib's object API on an Agg canvas (no pyplot state)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if fmt not in FIGURE_FORMATS:
        raise InvalidInput(f"the plot format must be one of {', '.join(FIGURE_FORMATS)}, not '{fmt}'",
                           field="plot", value=fmt)
    figure = Figure(figsize=(7.5, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for endpoint, test in TESTS:
        rows = sorted((row for row in report.results if (row.endpoint, row.test) == (endpoint, test)),
                      key=lambda row: row.n_per_arm)
        if not rows:
            continue
        sizes = [row.n_per_arm for row in rows]
        axes.errorbar(sizes, [row.power for row in rows], yerr=[1.96 * row.mc_se for row in rows], marker="o",
                      capsize=3, linestyle="--" if rows[0].type_i_error else "-",
                      label=f"{endpoint} ({test})" + (", type I error" if rows[0].type_i_error else ""))
    axes.axhline(report.target_power, color="grey", linewidth=0.8, linestyle=":")
    axes.axhline(report.alpha, color="grey", linewidth=0.8, linestyle=":")
    axes.annotate(f"target {report.target_power:g}", (0, report.target_power), xycoords=("axes fraction", "data"),
                  xytext=(4, 3), textcoords="offset points", fontsize=8, color="grey")
    axes.annotate(f"alpha {report.alpha:g}", (0, report.alpha), xycoords=("axes fraction", "data"),
                  xytext=(4, 3), textcoords="offset points", fontsize=8, color="grey")
    axes.set_ylim(0, 1)
    axes.set_xlabel("patients per arm (control)")
    axes.set_ylabel("power (share of trials with p < alpha)")
    axes.set_title(f"{report.protocol}, scenario {report.scenario}: {report.trials} simulated trials per size",
                   fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "cmvtrial"}):  # text stays text
        figure.savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else {})
    return buffer.getvalue()
