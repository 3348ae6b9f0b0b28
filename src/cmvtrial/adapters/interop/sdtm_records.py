"""What every SDTM record of a subject shares: identifiers, the study day, the epoch, ISO 8601 dates
and the subject's facts the domains read (randomization date, doses given, screening values).

Why apart: the subject domains (DM, DS, SV, EX, AE, CM, MH; :mod:`.sdtm`) and the findings
domains (LB, VS, QS; :mod:`.sdtm_findings`) must number days, name epochs and identify records
the same way, and the FHIR export writes results with the same number text.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from cmvtrial.core import units
from cmvtrial.errors import CmvtrialError

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Item
    from cmvtrial.services.export_data import ExportData, ExportSubject, ExportValue


def iso(value: date | datetime | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(microsecond=0, tzinfo=None).isoformat(timespec="minutes")
    return value.isoformat()


def study_day(on: date | None, reference: date | None) -> float | None:
    """SDTM --DY: day 1 is the reference date, the day before is -1 (no day 0)."""
    if on is None or reference is None:
        return None
    days = (on - reference).days
    return float(days + 1 if days >= 0 else days)


def number_text(value: float) -> str:
    """A standardized result as text: up to 12 significant digits, never in exponent form."""
    text = format(value, ".12g")
    if "e" in text:
        text = format(Decimal(text), "f")
    return text


def parse_date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def canonical_or_as_given(unit: str | None) -> str | None:
    if not unit:
        return None
    try:
        return units.canonical_unit(unit)
    except CmvtrialError:
        return unit


class SubjectRecords:
    """The export snapshot as the SDTM domains read it, subject by subject."""

    def __init__(self, data: ExportData) -> None:
        self.data = data
        self.protocol = data.protocol
        self.study = data.study_id
        self.forms = {form.id: form for form in self.protocol.forms}

    def reference(self, subject: ExportSubject) -> date | None:
        return subject.randomization_date

    def epoch(self, subject: ExportSubject, on: date | None) -> str | None:
        if on is None:
            return None
        if subject.randomization_date is None or on < subject.randomization_date:
            return "SCREENING"
        if subject.end_of_treatment_date is not None and on > subject.end_of_treatment_date:
            return "FOLLOW-UP"
        return "TREATMENT"

    def given(self, subject: ExportSubject) -> list[Any]:
        return [dose for dose in self.data.doses_of(subject.key) if dose.status == "given"]

    def first_dose(self, subject: ExportSubject) -> date | None:
        return min((dose.administered_on for dose in self.given(subject)), default=None)

    def ids(self, subject: ExportSubject, domain: str) -> dict[str, Any]:
        return {"STUDYID": self.study, "DOMAIN": domain, "USUBJID": self.data.usubjid(subject.key)}

    def item(self, form_id: str, path: str) -> Item | None:
        form = self.forms.get(form_id)
        return form.item_paths().get(path) if form is not None else None

    def screening_values(self, subject: ExportSubject) -> dict[str, ExportValue]:
        return {v.item: v for v in self.data.values_of(subject.key) if v.form == self.protocol.screening_form}

    def shown(self, value: ExportValue, definition: Item) -> str | None:
        """A code's label (the reported term), a date as ISO 8601, anything else as stored."""
        if definition.type == "code" and definition.codelist and value.text:
            try:
                entries = {e.code: e.label for e in self.protocol.codelist(definition.codelist).items}
            except CmvtrialError:
                entries = {}
            return entries.get(value.text, value.text)
        return value.text if value.text is not None else value.entered_value
