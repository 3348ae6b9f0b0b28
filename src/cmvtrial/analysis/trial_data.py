"""The trial as the analyses see it: one plain, frozen snapshot of everything the report needs.

Why a snapshot and not the database: the analyses are pure (STYLE.md "Layout") and must give the
same answer whoever collected the data. A service (``services/analysis_data.py``) builds a
``TrialData`` from the database at a data cut-off, the simulator's adapter
(:mod:`cmvtrial.analysis.from_simulation`) builds one from a virtual trial, and tests build one by
hand; :mod:`cmvtrial.analysis.derivations` and :mod:`cmvtrial.analysis.report_results` take
nothing else.

What it holds (docs/report.md lists every field):

- the **protocol** itself (arms, visits and windows, endpoints, assay limit, analysis plan);
- **subjects**: every randomized subject with dates, arms, strata, status and baseline
  characteristics (:class:`SubjectRecord`);
- **screening** outcomes of every candidate assessed, for the CONSORT diagram;
- **observations**: one row per captured numeric value, normalized to the protocol item's unit
  (:data:`OBSERVATION_COLUMNS`); held as a pandas DataFrame because a 10,000-subject trial has
  millions of them (build it from :class:`Observation` records with :func:`observations_frame`);
- **doses**: one row per administration given, held or missed (:data:`DOSE_COLUMNS`);
- **adverse events**, **data-quality** counts, the **data cut-off** date and where the data came from.

``TrialData.create`` checks the parts against each other (unknown subjects or arms, a status
outside the vocabulary, a subject randomized after the cut-off) and raises ``InvalidInput`` naming
the first problem, so a bad snapshot fails before any statistic is computed. The frames are copied
on the way in; treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cmvtrial.errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol

#: Subject statuses a snapshot may carry (the store's, plus the ways a subject leaves the trial).
SUBJECT_STATUSES: tuple[str, ...] = (
    "randomized", "on_treatment", "in_follow_up", "completed", "withdrawn", "lost_to_follow_up", "died",
)
#: Statuses that end participation early (CONSORT "discontinued").
DISCONTINUED_STATUSES: tuple[str, ...] = ("withdrawn", "lost_to_follow_up", "died")
#: What became of a screened candidate.
SCREENING_OUTCOMES: tuple[str, ...] = ("randomized", "not_eligible", "declined_consent", "not_randomized")
DOSE_STATUSES: tuple[str, ...] = ("given", "held", "missed")


@dataclass(frozen=True)
class SubjectRecord:
    """One randomized subject. Dates are calendar dates; ``None`` is "not (yet) known"."""

    subject_id: str
    site: str
    arm_randomized: str
    randomization_date: date
    arm_received: str | None = None
    strata: Mapping[str, str] = field(default_factory=dict)
    screening_date: date | None = None
    consent_date: date | None = None
    first_dose_date: date | None = None
    last_dose_date: date | None = None
    end_of_treatment_date: date | None = None
    end_of_treatment_reason: str | None = None
    status: str = "on_treatment"
    withdrawal_date: date | None = None
    withdrawal_reason: str | None = None
    eligible: bool | None = None
    age_years: float | None = None
    sex: str | None = None
    weight_kg: float | None = None
    diagnosis: str | None = None
    creatinine_clearance_ml_min: float | None = None
    steroid_mg_per_kg_day: float | None = None
    baseline_cmv_copies_per_ml: float | None = None


@dataclass(frozen=True)
class ScreeningOutcome:
    """One candidate assessed for eligibility; ``reasons`` are criterion ids or a short text."""

    candidate_id: str
    site: str
    outcome: str
    screening_date: date | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observation:
    """One captured numeric value, normalized to the protocol item's unit (ODM item data).

    ``value`` may be ``None`` for a CMV-DNA result reported only as below the limit
    (``below_lloq``) or not detected. ``lln``/``uln`` are the laboratory's limits when recorded
    (CTCAE grading of the shift tables needs them).
    """

    subject_id: str
    form: str
    item: str
    date: date
    value: float | None
    unit: str | None = None
    visit: str | None = None
    loinc: str | None = None
    below_lloq: bool = False
    not_detected: bool = False
    lln: float | None = None
    uln: float | None = None


@dataclass(frozen=True)
class DoseRecord:
    """One administration of a study drug: given, held (with the reason) or missed."""

    subject_id: str
    drug: str
    date: date
    status: str = "given"
    dose: float | None = None
    unit: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AdverseEventRecord:
    """One adverse event: CTCAE term and grade, seriousness, relatedness and action per drug."""

    subject_id: str
    term: str
    start_date: date
    grade: int | None = None
    serious: bool = False
    end_date: date | None = None
    relatedness: Mapping[str, str] = field(default_factory=dict)
    action_taken: Mapping[str, str] = field(default_factory=dict)
    outcome: str | None = None
    from_lab: bool = False


@dataclass(frozen=True)
class DataQuality:
    """Data-management status at the cut-off: what a reader must know before trusting the numbers."""

    open_queries: int = 0
    answered_queries: int = 0
    unsigned_visits: int = 0
    notes: tuple[str, ...] = ()


#: Columns of ``TrialData.observations`` (dates as datetime64, values as float).
OBSERVATION_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Observation))
#: Columns of ``TrialData.doses``.
DOSE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(DoseRecord))


def observations_frame(records: Iterable[Observation] | pd.DataFrame) -> pd.DataFrame:
    """Observations as the snapshot's frame: the documented columns and dtypes, nothing else."""
    frame = _frame(records, Observation, OBSERVATION_COLUMNS, required=("subject_id", "form", "item", "date"))
    for name in ("value", "lln", "uln"):
        frame[name] = _numbers(frame[name], f"observation {name}")
    for name in ("below_lloq", "not_detected"):
        frame[name] = frame[name].fillna(False).astype(bool)
    return frame


def doses_frame(records: Iterable[DoseRecord] | pd.DataFrame) -> pd.DataFrame:
    """Dose records as the snapshot's frame; a status outside given/held/missed is refused."""
    frame = _frame(records, DoseRecord, DOSE_COLUMNS, required=("subject_id", "drug", "date", "status"))
    frame["dose"] = _numbers(frame["dose"], "dose")
    bad = ~frame["status"].isin(DOSE_STATUSES)
    if bad.any():
        value = frame.loc[bad, "status"].iloc[0]
        raise InvalidInput(f"dose status {value!r} is not one of {', '.join(DOSE_STATUSES)}", field="status", value=str(value))
    return frame


def _frame(records: Any, kind: type, columns: Sequence[str], *, required: Sequence[str]) -> pd.DataFrame:
    if isinstance(records, pd.DataFrame):
        missing = [name for name in required if name not in records.columns]
        if missing:
            raise InvalidInput(f"{kind.__name__.lower()} table lacks column {missing[0]!r}", field=missing[0])
        frame = records.reindex(columns=list(columns)).copy()
    else:
        rows = [tuple(getattr(record, name) for name in columns) for record in records]
        frame = pd.DataFrame.from_records(rows, columns=list(columns))
    frame["subject_id"] = frame["subject_id"].astype(str)
    for name in required:
        if frame[name].isna().any():
            raise InvalidInput(f"a {kind.__name__.lower()} has no {name}", field=name)
    frame["date"] = _dates(frame["date"], f"{kind.__name__.lower()} date")
    return frame.reset_index(drop=True)


def _numbers(values: pd.Series, what: str) -> pd.Series:
    converted = pd.to_numeric(values, errors="coerce")
    bad = converted.isna() & values.notna()
    if bad.any():
        raise InvalidInput(f"{what} must be a number, not {values[bad].iloc[0]!r}", field=what)
    return converted.astype(float)


def _dates(values: pd.Series, what: str) -> pd.Series:
    converted = pd.to_datetime(values, errors="coerce")
    bad = converted.isna() & values.notna()
    if bad.any():
        raise InvalidInput(f"{what} must be a date, not {values[bad].iloc[0]!r}", field=what)
    return converted.astype("datetime64[ns]")


@dataclass(frozen=True, eq=False)
class TrialData:
    """Everything the analyses of one trial read, at one data cut-off. Build it with :meth:`create`."""

    protocol: Protocol
    data_cutoff: date
    subjects: tuple[SubjectRecord, ...]
    observations: pd.DataFrame
    doses: pd.DataFrame
    adverse_events: tuple[AdverseEventRecord, ...] = ()
    screening: tuple[ScreeningOutcome, ...] = ()
    data_quality: DataQuality = field(default_factory=DataQuality)
    source: str = "database"

    @classmethod
    def create(
        cls,
        *,
        protocol: Protocol,
        data_cutoff: date,
        subjects: Iterable[SubjectRecord],
        observations: Iterable[Observation] | pd.DataFrame = (),
        doses: Iterable[DoseRecord] | pd.DataFrame = (),
        adverse_events: Iterable[AdverseEventRecord] = (),
        screening: Iterable[ScreeningOutcome] = (),
        data_quality: DataQuality | None = None,
        source: str = "database",
    ) -> TrialData:
        """A checked snapshot; ``InvalidInput`` names the first inconsistency found."""
        if not isinstance(data_cutoff, date):
            raise InvalidInput("the data cut-off must be a date", field="data_cutoff", value=str(data_cutoff))
        data = cls(
            protocol=protocol,
            data_cutoff=data_cutoff,
            subjects=tuple(subjects),
            observations=observations_frame(observations),
            doses=doses_frame(doses),
            adverse_events=tuple(adverse_events),
            screening=tuple(screening),
            data_quality=data_quality or DataQuality(),
            source=source,
        )
        data._check()
        return data

    # -- checks --------------------------------------------------------------------------------
    def _check(self) -> None:
        arm_ids = {arm.id for arm in self.protocol.arms}
        seen: set[str] = set()
        for subject in self.subjects:
            who = subject.subject_id
            if who in seen:
                raise InvalidInput(f"subject {who} is listed twice", field="subject_id", value=who)
            seen.add(who)
            for name in ("arm_randomized", "arm_received"):
                arm = getattr(subject, name)
                if arm is not None and arm not in arm_ids:
                    raise InvalidInput(
                        f"subject {who}: {name} {arm!r} is not an arm of protocol {self.protocol.id} "
                        f"({', '.join(sorted(arm_ids))})",
                        field=name,
                        value=arm,
                    )
            if subject.status not in SUBJECT_STATUSES:
                raise InvalidInput(
                    f"subject {who}: status {subject.status!r} is not one of {', '.join(SUBJECT_STATUSES)}",
                    field="status",
                    value=subject.status,
                )
            if subject.randomization_date > self.data_cutoff:
                raise InvalidInput(
                    f"subject {who} was randomized on {subject.randomization_date}, after the data cut-off "
                    f"{self.data_cutoff}",
                    field="randomization_date",
                    value=subject.randomization_date.isoformat(),
                )
        for name, frame in (("observation", self.observations), ("dose", self.doses)):
            unknown = ~frame["subject_id"].isin(seen)
            if unknown.any():
                who = frame.loc[unknown, "subject_id"].iloc[0]
                raise InvalidInput(f"a {name} names subject {who}, who is not in the snapshot", field="subject_id", value=who)
        for event in self.adverse_events:
            if event.subject_id not in seen:
                raise InvalidInput(
                    f"an adverse event names subject {event.subject_id}, who is not in the snapshot",
                    field="subject_id",
                    value=event.subject_id,
                )
            if event.grade is not None and not 1 <= event.grade <= 5:
                raise InvalidInput(f"adverse event grade {event.grade} is not 1-5", field="grade", value=event.grade)
        for candidate in self.screening:
            if candidate.outcome not in SCREENING_OUTCOMES:
                raise InvalidInput(
                    f"candidate {candidate.candidate_id}: outcome {candidate.outcome!r} is not one of "
                    f"{', '.join(SCREENING_OUTCOMES)}",
                    field="outcome",
                    value=candidate.outcome,
                )

    # -- conveniences ----------------------------------------------------------------------------
    @property
    def subjects_frame(self) -> pd.DataFrame:
        """The subjects as a frame (one row each, the :class:`SubjectRecord` fields as columns)."""
        names = [f.name for f in fields(SubjectRecord)]
        return pd.DataFrame.from_records([tuple(getattr(s, n) for n in names) for s in self.subjects], columns=names)

    @property
    def cutoff_timestamp(self) -> np.datetime64:
        return np.datetime64(self.data_cutoff, "ns")
