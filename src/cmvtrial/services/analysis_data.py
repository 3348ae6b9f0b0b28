"""The trial database as the analyses' snapshot: ``build_trial_data`` for `cmvtrial report --db`.

Why a snapshot (analysis/trial_data.py): the report's statistics are pure and must give the same
answer whoever collected the data, so this service reads everything once, in one read-only
transaction, at a data cut-off, and hands ``TrialData`` over. It mirrors what the simulator's
adapter (analysis/from_simulation.py) builds from a virtual trial, field for field:

- **subjects**: every subject allocated on or before the cut-off, by subject number: site, arm
  randomized (the allocation) and received (the arm whose drugs the given doses match), strata
  (the allocation's levels), screening, consent, randomization, first and last dose and end of
  treatment dates, status at the cut-off (withdrawn, lost to follow-up, died or completed once the
  end of study recorded by services/end_of_study.py is on or before it, with the withdrawal's date
  and reason), and baseline characteristics from the stored screening
  record through the protocol's own derived values (found by method, as the simulator's adapter
  does: age, Cockcroft-Gault clearance, prednisone equivalent per kg, CMV-DNA in copies/mL);
- **screening outcomes** of every candidate screened by the cut-off (CONSORT): randomized, not
  eligible (with the criteria), declined consent, or not randomized;
- **observations**: every numeric item value, normalized to its item's unit, dated by the form's
  sample date (else the visit's date), with its visit label and LOINC code; a CMV-DNA result
  below the limit or not detected is flagged, with no value; a ULN the protocol pairs with the
  item (its ``multiple_of_uln`` derived values) is carried along;
- **doses**, **adverse events**, and the **data quality** at the cut-off (queries still open or
  answered, visits with data but no valid signature).

Only statistician and data-manager roles may build it (``analysis.run``); nothing is written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import date
from typing import Any

from sqlalchemy import select

from cmvtrial.analysis.trial_data import (
    AdverseEventRecord,
    DataQuality,
    DoseRecord,
    Observation,
    ScreeningOutcome,
    SubjectRecord,
    TrialData,
)
from cmvtrial.core.disposition import ENDED, LEFT_EARLY, exit_reason
from cmvtrial.core.eligibility import expression_values
from cmvtrial.core.schedule import DETECTED_BELOW_LLOQ, NOT_DETECTED
from cmvtrial.core.screening_items import record_data
from cmvtrial.errors import CmvtrialError, DatabaseNotInitialised
from cmvtrial.services import permissions
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_versions import parsed
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.services.visit_data import cmv_items, sample_date_item, uln_items
from cmvtrial.store.tables import (
    AdverseEvent,
    Allocation,
    DoseAdministration,
    FormInstance,
    ItemValue,
    Query,
    Signature,
    Site,
    StudyEvent,
    Subject,
)

#: Derived-value methods whose result is a baseline characteristic of ``SubjectRecord``.
BASELINE_METHODS = {
    "age_in_years": "age_years",
    "cockcroft_gault": "creatinine_clearance_ml_min",
    "prednisone_equivalent_per_kg": "steroid_mg_per_kg_day",
    "cmv_copies_per_ml": "baseline_cmv_copies_per_ml",
}


def build_trial_data(uow: UnitOfWork, actor: Actor, *, data_cutoff: date | None = None) -> TrialData:
    """The trial as of ``data_cutoff`` (default: the unit of work's clock's date)."""
    permissions.require(actor, "analysis.run")
    with uow.reading():
        trial = uow.trial.current()
        if trial is None:
            raise DatabaseNotInitialised("this database has no trial yet; run `cmvtrial init --protocol ID`")
        version = uow.protocols.require(trial.protocol_version_id)
        protocol = parsed(version)
        cutoff = data_cutoff or uow.clock().date()
        snapshot = _Snapshot(uow, protocol, cutoff)
        return TrialData.create(
            protocol=protocol, data_cutoff=cutoff, subjects=snapshot.subjects(), observations=snapshot.observations(),
            doses=snapshot.doses(), adverse_events=snapshot.adverse_events(), screening=snapshot.screening(),
            data_quality=snapshot.data_quality(),
            source=f"database: protocol {version.protocol_id} version {version.version} (sha256 {version.sha256[:12]})",
        )


def _label(subject: Subject, site_code: str) -> str:
    return subject.subject_number or f"{site_code}:{subject.screening_number}"


class _Snapshot:
    def __init__(self, uow: UnitOfWork, protocol: Any, cutoff: date) -> None:
        self.session = uow.session
        self.protocol = protocol
        self.cutoff = cutoff
        self.sites = {site.id: site.code for site in self.session.scalars(select(Site))}
        self.all_subjects = list(self.session.scalars(select(Subject).order_by(Subject.id)))
        self.allocations = {a.subject_id: a for a in self.session.scalars(select(Allocation))
                            if a.allocated_at.date() <= cutoff}
        self.labels = {s.id: _label(s, self.sites.get(s.site_id, "?")) for s in self.all_subjects}
        self.events: dict[int, StudyEvent] = {e.id: e for e in self.session.scalars(select(StudyEvent))}
        self.dose_rows = [row for row in self.session.scalars(
            select(DoseAdministration).order_by(DoseAdministration.administered_on, DoseAdministration.id))
            if row.administered_on <= cutoff and row.subject_id in self.allocations]
        self.screening_data: dict[int, dict[str, object]] = {}
        for subject in self.all_subjects:
            rows = self.session.scalars(select(ItemValue).join(FormInstance, FormInstance.id == ItemValue.form_instance_id)
                                        .where(FormInstance.subject_id == subject.id,
                                               FormInstance.form_id == protocol.screening_form))
            self.screening_data[subject.id] = dict(record_data(list(rows)))

    # -- subjects ----------------------------------------------------------------------------------
    def _screened_on(self, subject: Subject) -> date | None:
        value = self.screening_data[subject.id].get("screening_date")
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                return None
        return None

    def subjects(self) -> list[SubjectRecord]:
        given: dict[int, list[DoseAdministration]] = defaultdict(list)
        for row in self.dose_rows:
            if row.status == "given":
                given[row.subject_id].append(row)
        records = []
        for subject in self.all_subjects:
            allocation = self.allocations.get(subject.id)
            if allocation is None:
                continue
            doses = given.get(subject.id, [])
            eot = subject.end_of_treatment_date if subject.end_of_treatment_date and \
                subject.end_of_treatment_date <= self.cutoff else None
            status = _status(subject, eot, bool(doses), self.cutoff)
            left = status in LEFT_EARLY
            data = self.screening_data[subject.id]
            records.append(SubjectRecord(
                subject_id=self.labels[subject.id], site=self.sites.get(subject.site_id, "?"),
                arm_randomized=allocation.arm_id, randomization_date=allocation.allocated_at.date(),
                arm_received=self._arm_received(allocation.arm_id, {row.drug for row in doses}),
                strata=_levels(allocation.details), screening_date=self._screened_on(subject),
                consent_date=subject.consent_date,
                first_dose_date=min((row.administered_on for row in doses), default=None),
                last_dose_date=max((row.administered_on for row in doses), default=None),
                end_of_treatment_date=eot, end_of_treatment_reason=subject.end_of_treatment_reason if eot else None,
                status=status, withdrawal_date=subject.end_of_study_date if left else None,
                withdrawal_reason=_withdrawal_reason(subject) if left else None,
                eligible={"eligible": True, "not_eligible": False}.get(subject.eligibility or ""),
                sex=_text(data.get("sex")), diagnosis=_text(data.get("diagnosis")),
                weight_kg=_number(data.get("weight_kg")), **self._baseline(data),
            ))
        return records

    def _arm_received(self, randomized: str, drugs: set[str]) -> str | None:
        """The arm whose drugs match the doses given (as treated); None before the first dose."""
        if not drugs:
            return None
        wanted = {drug.casefold() for drug in drugs}
        arms = {arm.id: {regimen.drug.casefold() for regimen in arm.regimens} for arm in self.protocol.arms}
        if arms.get(randomized) == wanted:
            return randomized
        exact = [arm_id for arm_id, given in arms.items() if given == wanted]
        if exact:
            return exact[0]
        covering = [arm_id for _size, arm_id in sorted((len(given), arm_id) for arm_id, given in arms.items()
                                                        if wanted <= given)]
        return randomized if randomized in covering or not covering else covering[0]

    def _baseline(self, data: Mapping[str, object]) -> dict[str, float | None]:
        found: dict[str, float | None] = dict.fromkeys(BASELINE_METHODS.values())
        if not data:
            return found
        try:
            values, _derived = expression_values(self.protocol, data)
        except CmvtrialError:
            return found  # a record the rules cannot read leaves the characteristics unknown
        for spec in self.protocol.derived_values:
            if spec.method in BASELINE_METHODS:
                found[BASELINE_METHODS[spec.method]] = _number(values.get(spec.name))
        return found

    # -- screening ---------------------------------------------------------------------------------
    def screening(self) -> list[ScreeningOutcome]:
        outcomes = []
        for subject in self.all_subjects:
            screened = self._screened_on(subject) or subject.created_at.date()
            if screened > self.cutoff:
                continue
            reasons = subject.screen_failure_reasons or []
            criteria = tuple(str(r["criterion"]) for r in reasons if isinstance(r, Mapping) and r.get("criterion"))
            categories = {r.get("category") for r in reasons if isinstance(r, Mapping)}
            if subject.id in self.allocations:
                outcome, why = "randomized", ()
            elif subject.status == "screen_failed" and "declined" in categories:
                outcome, why = "declined_consent", ()
            elif subject.status == "screen_failed" and criteria:
                outcome, why = "not_eligible", criteria
            else:
                details = tuple(str(r.get("detail")) for r in reasons if isinstance(r, Mapping) and r.get("detail"))
                outcome, why = "not_randomized", details
            outcomes.append(ScreeningOutcome(self.labels[subject.id], self.sites.get(subject.site_id, "?"), outcome,
                                             screened, why))
        return outcomes

    # -- observations ------------------------------------------------------------------------------
    def observations(self) -> list[Observation]:
        forms = {form.id: form for form in self.protocol.forms}
        cmv = cmv_items(self.protocol)
        ulns = uln_items(self.protocol)
        instances = self.session.scalars(select(FormInstance).where(
            FormInstance.subject_id.in_(list(self.allocations) or [-1])).order_by(FormInstance.id))
        rows_by_instance: dict[int, dict[str, ItemValue]] = defaultdict(dict)
        for row in self.session.scalars(select(ItemValue).where(ItemValue.subject_id.in_(list(self.allocations) or [-1]))):
            rows_by_instance[row.form_instance_id][row.item_id] = row
        found = []
        for instance in instances:
            form = forms.get(instance.form_id)
            if form is None:
                continue
            event = self.events.get(instance.study_event_id)
            rows = rows_by_instance.get(instance.id, {})
            on = self._sample_date(form, rows, event)
            if on is None or on > self.cutoff:
                continue
            visit = (f"{event.visit_code}{event.repeat_index}" if event.repeat_index else event.visit_code) if event else None
            category = rows.get(cmv.category or "") if cmv and cmv.form == form.id else None
            items = form.item_paths()
            for path, row in rows.items():
                item = items.get(path)
                if item is None or item.type not in ("quantity", "integer"):
                    continue
                is_cmv = cmv is not None and cmv.form == form.id and cmv.load == path
                result = category.normalized_text if (is_cmv and category is not None) else None
                below = result in (DETECTED_BELOW_LLOQ, NOT_DETECTED)
                if row.normalized_number is None and not below:
                    continue
                uln_row = rows.get(ulns.get(path, ""))
                found.append(Observation(
                    subject_id=self.labels[instance.subject_id], form=form.id, item=path, date=on,
                    value=None if below else row.normalized_number, unit=item.unit, visit=visit, loinc=item.loinc,
                    below_lloq=below, not_detected=result == NOT_DETECTED,
                    uln=uln_row.normalized_number if uln_row is not None else None))
        return found

    def _sample_date(self, form: Any, rows: Mapping[str, ItemValue], event: StudyEvent | None) -> date | None:
        path = sample_date_item(form)
        text = rows[path].normalized_text if path and path in rows else None
        if text:
            try:
                return date.fromisoformat(text)
            except ValueError:
                pass
        return event.actual_date if event is not None else None

    # -- doses, events, quality --------------------------------------------------------------------
    def doses(self) -> list[DoseRecord]:
        return [DoseRecord(self.labels[row.subject_id], row.drug, row.administered_on, row.status, row.dose,
                           row.dose_unit or None, row.reason) for row in self.dose_rows]

    def adverse_events(self) -> list[AdverseEventRecord]:
        found = []
        for row in self.session.scalars(select(AdverseEvent).order_by(AdverseEvent.id)):
            if row.subject_id not in self.allocations or row.onset_date > self.cutoff:
                continue
            assessments = [a for a in row.drug_assessments or [] if isinstance(a, Mapping) and a.get("drug")]
            ended = row.resolution_date if row.resolution_date and row.resolution_date <= self.cutoff else None
            found.append(AdverseEventRecord(
                subject_id=self.labels[row.subject_id], term=row.ctcae_term or row.term, start_date=row.onset_date,
                grade=row.ctcae_grade, serious=bool(row.serious), end_date=ended,
                relatedness={str(a["drug"]): str(a.get("relatedness")) for a in assessments if a.get("relatedness")},
                action_taken={str(a["drug"]): str(a.get("action_taken")) for a in assessments if a.get("action_taken")},
                outcome=row.outcome, from_lab=row.source == "lab_grading"))
        return found

    def data_quality(self) -> DataQuality:
        statuses = [status for (status,) in self.session.execute(select(Query.status))]
        with_data = {instance.study_event_id for instance in self.session.scalars(select(FormInstance))
                     if instance.form_id != self.protocol.screening_form}
        signed = {row.study_event_id for row in self.session.scalars(
            select(Signature).where(Signature.invalidated_at.is_(None), Signature.study_event_id.is_not(None)))}
        done = {event_id for event_id in with_data
                if (event := self.events.get(event_id)) is not None and event.actual_date is not None
                and event.actual_date <= self.cutoff}
        return DataQuality(
            open_queries=statuses.count("open"), answered_queries=statuses.count("answered"),
            unsigned_visits=len(done - signed),
            notes=("Queries are counted as they stand now; unsigned visits are visits with data and no valid "
                   "investigator signature.",))


def _levels(details: Any) -> dict[str, str]:
    levels = details.get("levels") if isinstance(details, Mapping) else None
    return {str(k): str(v) for k, v in levels.items()} if isinstance(levels, Mapping) else {}


def _status(subject: Subject, eot: date | None, dosed: bool, cutoff: date) -> str:
    """The subject's status at the cut-off, in the snapshot's vocabulary: an end of study counts from
    its date on; before it, the subject was still in the trial."""
    if subject.status in ENDED and subject.end_of_study_date is not None and subject.end_of_study_date <= cutoff:
        return subject.status
    if eot is not None:
        return "in_follow_up"
    return "on_treatment" if dosed else "randomized"


def _withdrawal_reason(subject: Subject) -> str:
    """``withdrew consent``, ``other: moved abroad`` (ADSL DCSREAS, as the simulator's adapter words it)."""
    reason = exit_reason(subject.end_of_study_reason)
    label = reason.label if reason is not None else subject.status.replace("_", " ")
    return f"{label}: {subject.end_of_study_details}" if reason is not None and reason.needs_details and \
        subject.end_of_study_details else label


def _number(value: object) -> float | None:
    if isinstance(value, Mapping):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
