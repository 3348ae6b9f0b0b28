"""The SAE report form as a self-contained HTML page (Jinja2) or a PDF (fpdf2).

Both renderers lay out the same ``SaeReportForm`` the SAE service assembles; they hold no rule.
The HTML page embeds its style and needs nothing else, so it can be mailed or archived as one file.
The PDF is drawn with fpdf2 (pure Python) in DejaVu Sans, the font shipped inside matplotlib (a
pinned dependency): it covers Latin, Greek and Cyrillic, so names and units such as "µmol/L" print
as typed. Characters it lacks (CJK, say) are replaced by "?" in the PDF; the HTML page shows them.
"""

from __future__ import annotations

import functools
import importlib.util
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cmvtrial.services.sae_reporting import SaeReportForm

_STATUS_LABELS = {
    "due": "due",
    "overdue": "OVERDUE",
    "reported_on_time": "reported on time",
    "reported_late": "reported late",
    "reported": "reported",
    "no_window_in_protocol": "no window in the protocol",
}
FORMATS = ("html", "pdf")


def when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "—"


def day(value: date | None) -> str:
    return value.isoformat() if value else "—"


def _context(form: SaeReportForm) -> dict[str, Any]:
    window = form.status.window
    return {
        "form": form,
        "event": form.event,
        "status_label": _STATUS_LABELS.get(form.status.status, form.status.status),
        "window_hours": f"{window.total_seconds() / 3600:g}" if window else None,
        "when": when,
        "day": day,
    }


@functools.cache
def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("cmvtrial.adapters.reports", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(form: SaeReportForm) -> str:
    """The form as one HTML page (styles inline, no external resources; user text escaped)."""
    return str(_environment().get_template("sae_report.html.j2").render(**_context(form)))


# --- PDF ------------------------------------------------------------------------------------------------


def _dejavu() -> tuple[Path, Path] | None:
    """DejaVu Sans (regular, bold) from matplotlib's data folder, found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        fonts = Path(folder) / "mpl-data" / "fonts" / "ttf"
        regular, bold = fonts / "DejaVuSans.ttf", fonts / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            return regular, bold
    return None


class _Pdf:
    """A small layout helper over fpdf2: headings, label/value rows, tables, paragraphs."""

    def __init__(self, form: SaeReportForm) -> None:
        from fpdf import FPDF

        self.pdf = FPDF(orientation="portrait", unit="mm", format="A4")
        self.pdf.set_auto_page_break(auto=True, margin=15)
        self.pdf.set_title(form.title)
        self.pdf.set_creator("cmvtrial")
        self.pdf.set_author(form.generated_by)
        fonts = _dejavu()
        if fonts:
            self.pdf.add_font("DejaVu", "", str(fonts[0]))
            self.pdf.add_font("DejaVu", "B", str(fonts[1]))
            self.family, self.unicode = "DejaVu", True
        else:  # pragma: no cover - matplotlib ships the font
            self.family, self.unicode = "Helvetica", False
        self.glyphs: set[int] | None = None
        self.pdf.add_page()

    def text(self, value: object) -> str:
        """Text the font can draw: unknown characters become '?' rather than silent blanks."""
        text = str(value)
        if not self.unicode:
            return text.encode("latin-1", "replace").decode("latin-1")
        if self.glyphs is None:
            self.glyphs = set(self.pdf.current_font.cmap)  # type: ignore[union-attr]
        return "".join(c if ord(c) in self.glyphs or c in "\n\t" else "?" for c in text)

    def font(self, size: float, bold: bool = False) -> None:
        self.pdf.set_font(self.family, "B" if bold else "", size)

    def paragraph(self, value: object, size: float = 9.5, bold: bool = False, height: float = 5) -> None:
        from fpdf.enums import XPos, YPos

        self.font(size, bold)
        self.pdf.multi_cell(0, height, self.text(value), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def heading(self, value: str) -> None:
        self.pdf.ln(3)
        self.paragraph(value, size=11.5, bold=True, height=7)
        y = self.pdf.get_y()
        self.pdf.line(self.pdf.l_margin, y, self.pdf.w - self.pdf.r_margin, y)
        self.pdf.ln(1.5)

    def table(self, rows: list[tuple[str, ...]], header: bool, widths: tuple[float, ...]) -> None:
        self.font(9.5)
        with self.pdf.table(col_widths=widths, first_row_as_headings=header, line_height=5.5,
                            text_align="LEFT") as table:
            for values in rows:
                row = table.row()
                for value in values:
                    row.cell(self.text(value))

    def fields(self, rows: list[tuple[str, str]]) -> None:
        self.table(rows, header=False, widths=(30, 70))

    def output(self) -> bytes:
        return bytes(self.pdf.output())


def render_pdf(form: SaeReportForm) -> bytes:
    """The form as a PDF document (A4), with the same sections as the HTML page."""
    context = _context(form)
    event = form.event
    clock = form.status.clock
    doc = _Pdf(form)
    doc.paragraph("Serious adverse event report", size=16, bold=True, height=9)
    registry = f" · {', '.join(form.registry_ids)}" if form.registry_ids else ""
    doc.paragraph(f"{form.protocol_title}\nProtocol {form.protocol_id} version {form.protocol_version}"
                  f"{registry} · Sponsor: {form.sponsor}", size=9)

    doc.heading("1. Report status")
    submitted = "not yet"
    if event.report_submitted_at:
        submitted = f"{when(event.report_submitted_at)} by {event.report_submitted_by}"
        if event.report_reference:
            submitted += f" (reference {event.report_reference})"
    due = (("Report due (within " + str(context["window_hours"]) + " h of awareness)", when(clock.due_time))
           if clock else ("Report due", "the protocol names no expedited-reporting window"))
    doc.fields([("Status", context["status_label"]), ("Site aware of the event", when(event.awareness_time)),
                due, ("Report submitted", submitted)])

    doc.heading("2. Site and subject")
    doc.fields([("Site", f"{form.site_code} — {form.site_name}"), ("Subject", form.subject),
                ("Treatment arm", form.arm or "not randomized"), ("Consent date", day(form.consent_date))])

    doc.heading("3. The event")
    coded = f" (CTCAE v{event.ctcae_version})" if event.ctcae_term else " (free text, not yet coded)"
    rows = [("Event", event.label), ("Term", event.term + coded), ("MedDRA code", event.meddra_code or "—")]
    if event.verbatim != event.term:
        rows.append(("Verbatim", event.verbatim))
    rows += [("Grade", f"{event.grade} — {event.grade_text}"), ("Start date", day(event.start_date)),
             ("End date", day(event.end_date) if event.end_date else "ongoing"), ("Outcome", event.outcome)]
    doc.fields(rows)

    doc.heading("4. Seriousness (ICH E2A)")
    doc.table([("Criterion", "Meaning", "SDTM"),
               *((code.replace("_", " "), label, flag) for code, label, flag in form.seriousness)],
              header=True, widths=(25, 60, 15))

    doc.heading("5. Causality and action taken, per study drug")
    doc.table([("Drug", "Relatedness", "Related?", "Action taken"),
               *((c.drug, c.relatedness, "yes" if c.related else "no", c.action_taken) for c in form.causality)],
              header=True, widths=(25, 25, 15, 35))

    doc.heading("6. Narrative")
    doc.paragraph(event.narrative or "(no narrative recorded)")
    for finding in event.findings:
        doc.paragraph(f"• {finding.message} ({finding.code})", size=8.5)

    doc.heading("7. Investigator")
    doc.table([("Name", "Signature", "Date"), ("\n\n", "", "")], header=True, widths=(35, 40, 25))

    doc.pdf.ln(4)
    changed = f"; last changed {when(event.updated_at)}" if event.updated_at else ""
    doc.paragraph(f"Recorded {when(event.recorded_at)} by {event.recorded_by}{changed}. Generated "
                  f"{when(form.generated_at)} by {form.generated_by} with cmvtrial. Times are UTC.", size=8)
    return doc.output()


def render(form: SaeReportForm, fmt: str) -> bytes:
    """The form in ``fmt`` ('html' or 'pdf') as bytes ready to write."""
    if fmt == "html":
        return render_html(form).encode("utf-8")
    if fmt == "pdf":
        return render_pdf(form)
    from cmvtrial.errors import InvalidInput

    raise InvalidInput(f"unknown report format '{fmt}'; use one of {', '.join(FORMATS)}", field="format", value=fmt)
