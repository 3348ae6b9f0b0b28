"""The adverse-event record, its edit checks, seriousness, the expedited-report clock, lab proposals.

Why these belong together: they are the rules an investigator's AE form obeys, and the safety
services (record an AE, confirm a proposal, list overdue SAE reports) should be thin wrappers that
open a transaction, check permission, call one function here and write the audit event.

- ``build_adverse_event`` turns what a user entered into a validated ``AdverseEvent``: a CTCAE term
  (name or synonym, filled in with its MedDRA code and the CTCAE wording of the grade) or free text
  (worded with CTCAE's general grade definitions). Hard problems (end before start, grade 5 without a
  fatal outcome, ...) raise InvalidInput listing every problem with its field; soft findings (an end
  date on an event said to be ongoing) come back as results for a data query, per STYLE.md.
- Seriousness follows ICH E2A (Clinical Safety Data Management, 1994, section II.B): an event is
  serious when it meets at least one criterion, so ``serious`` is derived, never typed separately.
- ``expedited_report_clock`` counts from the moment the site became aware of a serious event. The
  window (24 hours in issue 5) is the caller's to pass, from the protocol: it is a trial's rule.
- ``propose_from_lab`` turns a lab grade into a proposal for the investigator: a new event, a higher
  worst grade on the open one, or nothing. It never creates anything (issue 5: nothing silently).

Pure: no clock reads (``today`` and ``now`` come in), no database, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, computed_field

from cmvtrial.core.ctcae import CtcaeTable, GradeResult, shipped_table
from cmvtrial.errors import InvalidInput


class SeriousnessCriterion(StrEnum):
    """ICH E2A section II.B: what makes an adverse event serious."""

    DEATH = "death"
    LIFE_THREATENING = "life_threatening"
    HOSPITALISATION = "hospitalisation"
    DISABILITY = "disability"
    CONGENITAL_ANOMALY = "congenital_anomaly"
    IMPORTANT_MEDICAL_EVENT = "important_medical_event"

    @property
    def label(self) -> str:
        return _SERIOUSNESS_LABELS[self]

    @property
    def sdtm_flag(self) -> str:
        """The SDTM AE variable that carries this criterion (SDTMIG v3.4 AE domain)."""
        return _SERIOUSNESS_SDTM[self]


_SERIOUSNESS_LABELS = {
    SeriousnessCriterion.DEATH: "results in death",
    SeriousnessCriterion.LIFE_THREATENING: "is life-threatening",
    SeriousnessCriterion.HOSPITALISATION: "requires inpatient hospitalisation or prolongs an existing one",
    SeriousnessCriterion.DISABILITY: "results in persistent or significant disability/incapacity",
    SeriousnessCriterion.CONGENITAL_ANOMALY: "is a congenital anomaly/birth defect",
    SeriousnessCriterion.IMPORTANT_MEDICAL_EVENT: "is an important medical event",
}
_SERIOUSNESS_SDTM = {
    SeriousnessCriterion.DEATH: "AESDTH",
    SeriousnessCriterion.LIFE_THREATENING: "AESLIFE",
    SeriousnessCriterion.HOSPITALISATION: "AESHOSP",
    SeriousnessCriterion.DISABILITY: "AESDISAB",
    SeriousnessCriterion.CONGENITAL_ANOMALY: "AESCONG",
    SeriousnessCriterion.IMPORTANT_MEDICAL_EVENT: "AESMIE",
}


class Relatedness(StrEnum):
    """The investigator's causality assessment for one drug; the first two count as not related."""

    NOT_RELATED = "not_related"
    UNLIKELY = "unlikely"
    POSSIBLE = "possible"
    PROBABLE = "probable"
    DEFINITE = "definite"
    NOT_APPLICABLE = "not_applicable"  # the subject does not receive this drug (control arm)

    @property
    def is_related(self) -> bool:
        """ICH E2A: related when a causal relationship is at least a reasonable possibility."""
        return self in (Relatedness.POSSIBLE, Relatedness.PROBABLE, Relatedness.DEFINITE)


class ActionTaken(StrEnum):
    """Action taken with a drug: CDISC codelist ACN (C66767), reference/standards.md §3.4."""

    DOSE_INCREASED = "DOSE INCREASED"
    DOSE_NOT_CHANGED = "DOSE NOT CHANGED"
    DOSE_REDUCED = "DOSE REDUCED"
    DRUG_INTERRUPTED = "DRUG INTERRUPTED"
    DRUG_WITHDRAWN = "DRUG WITHDRAWN"
    NOT_APPLICABLE = "NOT APPLICABLE"
    UNKNOWN = "UNKNOWN"


class Outcome(StrEnum):
    """Outcome of the event: CDISC codelist OUT (C66768), reference/standards.md §3.4."""

    FATAL = "FATAL"
    NOT_RECOVERED = "NOT RECOVERED/NOT RESOLVED"
    RECOVERED = "RECOVERED/RESOLVED"
    RECOVERED_WITH_SEQUELAE = "RECOVERED/RESOLVED WITH SEQUELAE"
    RECOVERING = "RECOVERING/RESOLVING"
    UNKNOWN = "UNKNOWN"


_ONGOING = (Outcome.NOT_RECOVERED, Outcome.RECOVERING)
_ENDED = (Outcome.RECOVERED, Outcome.RECOVERED_WITH_SEQUELAE, Outcome.FATAL)


class DrugAssessment(BaseModel):
    """Relatedness to, and action taken with, one study drug (IL-2 and ganciclovir separately)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drug: str = Field(min_length=1, max_length=100)
    relatedness: Relatedness
    action_taken: ActionTaken


class AdverseEvent(BaseModel):
    """One adverse event as recorded; build it with ``build_adverse_event`` so the checks run."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    term: str = Field(min_length=1, max_length=200)
    meddra_code: str | None = Field(default=None, pattern=r"^\d{8}$")
    ctcae_term: bool = False
    ctcae_version: str | None = None
    verbatim: str | None = Field(default=None, max_length=500)
    start_date: date
    end_date: date | None = None
    grade: int = Field(ge=1, le=5)
    grade_text: str = ""
    seriousness: tuple[SeriousnessCriterion, ...] = ()
    awareness_time: AwareDatetime | None = None
    drugs: tuple[DrugAssessment, ...] = ()
    outcome: Outcome
    narrative: str | None = Field(default=None, max_length=20000)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def serious(self) -> bool:
        return bool(self.seriousness)

    def assessment(self, drug: str) -> DrugAssessment | None:
        return next((d for d in self.drugs if d.drug.casefold() == drug.casefold()), None)

    def related_to(self, drug: str) -> bool:
        found = self.assessment(drug)
        return bool(found and found.relatedness.is_related)


@dataclass(frozen=True)
class EditFinding:
    """A soft edit-check finding: the data may be right, but someone should look (a query)."""

    code: str
    field: str
    message: str


@dataclass(frozen=True)
class CheckedEvent:
    event: AdverseEvent
    findings: tuple[EditFinding, ...]


def build_adverse_event(
    data: Mapping[str, Any],
    *,
    today: date,
    study_drugs: Sequence[str] | None = None,
    table: CtcaeTable | None = None,
) -> CheckedEvent:
    """Validate an AE as entered; InvalidInput lists every hard problem, findings hold the soft ones.

    ``study_drugs`` are the protocol's drug names: when given, each needs exactly one assessment.
    To edit an event, pass ``{**event.model_dump(), **changes}`` through here again.
    """
    table = table or shipped_table()
    fields = {k: v for k, v in dict(data).items() if k not in ("serious", "grade_text", "ctcae_term",
                                                                   "ctcae_version")}
    try:
        event = AdverseEvent.model_validate(fields)
    except ValidationError as error:
        _raise([(".".join(str(p) for p in e["loc"]) or "record", e["msg"]) for e in error.errors()])
    problems: list[tuple[str, str]] = []
    event = _with_term(event, table, problems)
    problems += _hard_problems(event, today=today, study_drugs=study_drugs)
    if problems:
        _raise(problems)
    return CheckedEvent(event=event, findings=tuple(soft_findings(event)))


def _raise(problems: list[tuple[str, str]]) -> None:
    field, message = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise InvalidInput(
        f"{field}: {message}{more}",
        field=field,
        problems=[{"location": f, "message": m} for f, m in problems],
    )


def _with_term(event: AdverseEvent, table: CtcaeTable, problems: list[tuple[str, str]]) -> AdverseEvent:
    """Fill the MedDRA code and the grade's wording from CTCAE, or the general wording for free text."""
    term = table.lookup(event.term)
    if term is None:
        return event.model_copy(update={"ctcae_term": False, "ctcae_version": table.version,
                                        "grade_text": table.general_grades[event.grade]})
    if event.meddra_code and event.meddra_code != term.meddra_code:
        problems.append(("meddra_code", f"'{term.term}' has MedDRA code {term.meddra_code}, "
                                        f"not {event.meddra_code}"))
    text = term.grade_text(event.grade)
    if not text:
        problems.append(("grade", f"CTCAE v{table.version} defines no grade {event.grade} for "
                                  f"'{term.term}' (it defines {term.defined_grades})"))
    return event.model_copy(update={
        "term": term.term, "meddra_code": term.meddra_code, "ctcae_term": True,
        "ctcae_version": table.version, "grade_text": text or "",
    })


def _hard_problems(
    event: AdverseEvent, *, today: date, study_drugs: Sequence[str] | None
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if event.start_date > today:
        problems.append(("start_date", f"start date {event.start_date} is in the future (today {today})"))
    if event.end_date is not None:
        if event.end_date < event.start_date:
            problems.append(("end_date", f"end date {event.end_date} is before the start date "
                                         f"{event.start_date}"))
        if event.end_date > today:
            problems.append(("end_date", f"end date {event.end_date} is in the future (today {today})"))
    if event.grade == 5 and event.outcome != Outcome.FATAL:
        problems.append(("outcome", "grade 5 means death related to the event: the outcome must be FATAL"))
    if event.outcome == Outcome.FATAL and event.grade != 5:
        problems.append(("grade", "a FATAL outcome is grade 5 in CTCAE"))
    if event.outcome == Outcome.FATAL and SeriousnessCriterion.DEATH not in event.seriousness:
        problems.append(("seriousness", "an event with a FATAL outcome is serious: it 'results in death'"))
    if len(set(event.seriousness)) != len(event.seriousness):
        problems.append(("seriousness", "a seriousness criterion is listed twice"))
    if event.serious and event.awareness_time is None:
        problems.append(("awareness_time", "a serious event needs the time the site became aware of it "
                                           "(the expedited-report clock starts there)"))
    if event.awareness_time is not None:
        aware_on = event.awareness_time.date()
        if aware_on < event.start_date:
            problems.append(("awareness_time", f"awareness on {aware_on} is before the event started "
                                               f"({event.start_date})"))
        if aware_on > today:
            problems.append(("awareness_time", f"awareness on {aware_on} is in the future (today {today})"))
    problems += _drug_problems(event, study_drugs)
    return problems


def _drug_problems(event: AdverseEvent, study_drugs: Sequence[str] | None) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    names = [d.drug.casefold() for d in event.drugs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(("drugs", f"drug '{name}' is assessed more than once"))
    if study_drugs is not None:
        expected = {d.casefold(): d for d in study_drugs}
        for missing in sorted(set(expected) - set(names)):
            problems.append(("drugs", f"relatedness and action for '{expected[missing]}' are required"))
        for unknown in sorted(set(names) - set(expected)):
            problems.append(("drugs", f"'{unknown}' is not a study drug of this protocol "
                                      f"({', '.join(study_drugs)})"))
    return problems


def soft_findings(event: AdverseEvent) -> list[EditFinding]:
    """Findings that deserve a query but may be right; never raised."""
    findings: list[EditFinding] = []
    if event.end_date is not None and event.outcome in _ONGOING:
        findings.append(EditFinding("end_date_but_ongoing", "end_date",
                                    f"an end date is given but the outcome is '{event.outcome}'"))
    if event.end_date is None and event.outcome in _ENDED:
        findings.append(EditFinding("ended_without_end_date", "end_date",
                                    f"the outcome is '{event.outcome}' but no end date is given"))
    if SeriousnessCriterion.DEATH in event.seriousness and event.outcome != Outcome.FATAL:
        findings.append(EditFinding("death_but_not_fatal", "outcome",
                                    "'results in death' is ticked but the outcome is not FATAL"))
    for drug in event.drugs:
        if drug.relatedness == Relatedness.NOT_APPLICABLE and drug.action_taken not in (
            ActionTaken.NOT_APPLICABLE, ActionTaken.UNKNOWN
        ):
            findings.append(EditFinding("action_for_drug_not_given", "drugs",
                                        f"'{drug.drug}' is marked not applicable but action "
                                        f"'{drug.action_taken}' was recorded"))
    if event.serious and not event.narrative:
        findings.append(EditFinding("serious_without_narrative", "narrative",
                                    "a serious event needs a narrative for the SAE report"))
    return findings


# --- the expedited-report clock -------------------------------------------------------------------


class ReportStatus(StrEnum):
    DUE = "due"
    OVERDUE = "overdue"
    REPORTED_ON_TIME = "reported_on_time"
    REPORTED_LATE = "reported_late"


@dataclass(frozen=True)
class ReportClock:
    """Where one serious event stands against its reporting deadline."""

    awareness_time: datetime
    due_time: datetime
    reported_time: datetime | None
    status: ReportStatus
    remaining: timedelta  # until the deadline (negative once past it); at report time if reported

    @property
    def overdue(self) -> bool:
        return self.status == ReportStatus.OVERDUE


def expedited_report_clock(
    awareness_time: datetime,
    now: datetime,
    *,
    report_within: timedelta,
    reported_time: datetime | None = None,
) -> ReportClock:
    """The deadline is ``awareness_time + report_within``; a report at the deadline is on time."""
    for name, moment in (("awareness_time", awareness_time), ("now", now), ("reported_time", reported_time)):
        if moment is not None and (not isinstance(moment, datetime) or moment.utcoffset() is None):
            raise InvalidInput(f"{name} must be a date and time with its time zone", field=name)
    if report_within <= timedelta(0):
        raise InvalidInput("the reporting window must be positive", field="report_within")
    if awareness_time > now:
        raise InvalidInput("awareness time is in the future", field="awareness_time",
                           value=awareness_time.isoformat())
    due = awareness_time + report_within
    if reported_time is None:
        status = ReportStatus.OVERDUE if now > due else ReportStatus.DUE
        return ReportClock(awareness_time, due, None, status, due - now)
    if reported_time < awareness_time:
        raise InvalidInput("the report cannot precede awareness of the event", field="reported_time")
    if reported_time > now:
        raise InvalidInput("the report time is in the future", field="reported_time")
    status = ReportStatus.REPORTED_LATE if reported_time > due else ReportStatus.REPORTED_ON_TIME
    return ReportClock(awareness_time, due, reported_time, status, due - reported_time)


def report_clock_for(
    event: AdverseEvent, now: datetime, *, report_within: timedelta, reported_time: datetime | None = None
) -> ReportClock:
    """The clock of a recorded event; only serious events are reported on an expedited basis."""
    if not event.serious or event.awareness_time is None:
        raise InvalidInput(f"'{event.term}' is not a serious event: no expedited report is due",
                           field="seriousness")
    return expedited_report_clock(event.awareness_time, now, report_within=report_within,
                                  reported_time=reported_time)


# --- proposals from lab values ----------------------------------------------------------------------


@dataclass(frozen=True)
class OpenEvent:
    """What a proposal needs to know about a subject's open AE of the same term."""

    term: str
    grade: int
    event_id: str | int | None = None


@dataclass(frozen=True)
class Proposal:
    """What a graded lab value suggests; the investigator confirms (or not) in a separate step."""

    action: Literal["new_event", "raise_grade", "none"]
    term: str
    meddra_code: str
    grade: int
    grade_text: str
    current_grade: int | None
    event_id: str | int | None
    start_date: date | None
    grading: GradeResult
    reason: str

    def draft(self) -> dict[str, Any]:
        """Fields to prefill the AE form with; the investigator adds relatedness, outcome, etc."""
        if self.action == "none":
            return {}
        fields: dict[str, Any] = {"term": self.term, "meddra_code": self.meddra_code, "grade": self.grade}
        if self.action == "new_event":
            fields["start_date"] = self.start_date
        return fields


def propose_from_lab(
    grading: GradeResult,
    *,
    observed_on: date,
    open_event: OpenEvent | None = None,
    table: CtcaeTable | None = None,
) -> Proposal:
    """A new AE when the lab reaches grade 1 and none is open; a raise when it beats the open grade."""
    table = table or shipped_table()
    term = table.find(grading.term)
    if open_event is not None:
        open_term = table.lookup(open_event.term)
        if open_term is None or open_term.term != term.term:
            raise InvalidInput(f"the open event is '{open_event.term}', not '{term.term}'",
                               field="open_event", value=open_event.term)
    base = {"term": term.term, "meddra_code": term.meddra_code, "grading": grading,
            "current_grade": open_event.grade if open_event else None,
            "event_id": open_event.event_id if open_event else None}
    if grading.grade == 0:
        return Proposal(action="none", grade=0, grade_text="", start_date=None,
                        reason="the value meets no CTCAE grade", **base)
    text = term.grade_text(grading.grade) or ""
    if open_event is None:
        return Proposal(action="new_event", grade=grading.grade, grade_text=text, start_date=observed_on,
                        reason=f"grade {grading.grade} on {observed_on} and no open '{term.term}' event",
                        **base)
    if grading.grade > open_event.grade:
        return Proposal(action="raise_grade", grade=grading.grade, grade_text=text, start_date=None,
                        reason=f"grade {grading.grade} on {observed_on} is worse than the open event's "
                               f"grade {open_event.grade}", **base)
    return Proposal(action="none", grade=grading.grade, grade_text=text, start_date=None,
                    reason=f"the open event is already at grade {open_event.grade}", **base)
