"""A simulated trial as a ``TrialData`` snapshot, so the report can be shown without a database.

Why: ``cmvtrial report --simulate SCENARIO --seed S`` and the report benchmark need a realistic
trial — screening failures, weekly CMV-DNA until negativity, week-12 immune markers, doses and
holds, adverse events, dropouts — and the simulator (:mod:`cmvtrial.simulation.virtual_trial`)
already lays each patient out the way a site would enter it. This module only reads that layout
(it does not import the simulator) and builds what the data-capture service would store:

- each candidate's screening outcome (randomized, not eligible with the criteria, declined);
- each randomized patient's course on their simulated arm: every numeric item of every form as an
  observation normalized to the protocol item's unit (the same conversion the form entry applies,
  cached per item and unit), CMV-DNA results below the limit flagged, the laboratory's ULN taken
  from the same form's ``<item>_uln`` when it has one; doses given or held; adverse events;
- the subject's status at the data cut-off (default: the last date anything happened, i.e. the
  trial complete): withdrawn at dropout, completed after the last visit, else in follow-up or on
  treatment. Patients randomized after the cut-off are left out; records after it are dropped.

Baseline characteristics come from the protocol's own derived values (found by method: age,
Cockcroft-Gault clearance, prednisone-equivalent dose per kg) evaluated on the screening record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from cmvtrial.analysis.derivations import analysis_setup
from cmvtrial.analysis.trial_data import (
    OBSERVATION_COLUMNS,
    AdverseEventRecord,
    DataQuality,
    ScreeningOutcome,
    SubjectRecord,
    TrialData,
)
from cmvtrial.core.eligibility import expression_values
from cmvtrial.core.form_entry import to_primary_unit
from cmvtrial.errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Item, Protocol

_BELOW = "detected_below_lloq"
_NOT_DETECTED = "not_detected"
#: The simulator's dropout reasons that are not a withdrawal (scenario files, ``dropout.reasons``).
_LEAVING = {"lost to follow-up": "lost_to_follow_up", "death": "died"}


def trial_data_from_simulation(
    protocol: Protocol, trial: Any, *, data_cutoff: date | None = None, id_prefix: str = ""
) -> TrialData:
    """Build the snapshot of a ``VirtualTrial`` (or its ``to_dict()``) as of ``data_cutoff``."""
    document = trial.to_dict() if hasattr(trial, "to_dict") else dict(trial)
    if document.get("protocol") != protocol.id:
        raise InvalidInput(
            f"the simulated trial is of protocol {document.get('protocol')!r}, not {protocol.id!r}", field="protocol"
        )
    candidates = document["candidates"]
    cutoff = data_cutoff or _last_date(candidates)
    builder = _Builder(protocol, cutoff, id_prefix)
    for candidate in candidates:
        builder.add(candidate)
    return TrialData.create(
        protocol=protocol,
        data_cutoff=cutoff,
        subjects=builder.subjects,
        observations=pd.DataFrame(dict(zip(OBSERVATION_COLUMNS, zip(*builder.observations, strict=True), strict=True))
                                  if builder.observations else {name: [] for name in OBSERVATION_COLUMNS}),
        doses=pd.DataFrame(builder.doses, columns=["subject_id", "drug", "date", "status", "dose", "unit", "reason"]),
        adverse_events=builder.adverse_events,
        screening=builder.screening,
        data_quality=DataQuality(notes=("Simulated trial: no queries or signatures exist.",)),
        source=f"simulation: protocol {protocol.id}, scenario {document.get('scenario')}, seed {document.get('seed')}",
    )


def _last_date(candidates: Sequence[Mapping[str, Any]]) -> date:
    last = max(date.fromisoformat(c["screening_date"]) for c in candidates)
    for candidate in candidates:
        if not candidate.get("randomized"):
            continue
        course = candidate["courses"][candidate["simulated_arm"]]
        days = [visit["date"] for visit in course["visits"]] + [dose["date"] for dose in course["doses"]]
        days += [event["end_date"] for event in course["adverse_events"] if event.get("end_date")]
        if course.get("dropout"):
            days.append(course["dropout"]["date"])
        if days:
            last = max(last, max(date.fromisoformat(d) for d in days))
    return last


class _Builder:
    def __init__(self, protocol: Protocol, cutoff: date, prefix: str) -> None:
        self.protocol = protocol
        self.cutoff = cutoff
        self.prefix = prefix
        self.items = {form.id: form.item_paths() for form in protocol.forms}
        self.methods = {value.method: value.name for value in protocol.derived_values}
        setup = analysis_setup(protocol)
        self.cmv_form, self.cmv_item = setup.cmv_form, setup.cmv_item
        self.drugs = {arm.id: [regimen.drug for regimen in arm.regimens] for arm in protocol.arms}
        self.conversions: dict[tuple[str, str, str | None], tuple[float, float]] = {}
        self.subjects: list[SubjectRecord] = []
        self.observations: list[tuple[Any, ...]] = []
        self.doses: list[tuple[Any, ...]] = []
        self.adverse_events: list[AdverseEventRecord] = []
        self.screening: list[ScreeningOutcome] = []

    # -- candidates ------------------------------------------------------------------------------
    def add(self, candidate: Mapping[str, Any]) -> None:
        screened = date.fromisoformat(candidate["screening_date"])
        if screened > self.cutoff:
            return
        who = self.prefix + candidate["id"]
        randomized = bool(candidate.get("randomized")) and date.fromisoformat(candidate["randomization_date"]) <= self.cutoff
        if randomized:
            outcome, reasons = "randomized", ()
        elif candidate.get("eligible") is False:
            outcome, reasons = "not_eligible", tuple(candidate.get("screen_failure_criteria", ()))
        elif candidate.get("eligible") and not candidate.get("consented"):
            outcome, reasons = "declined_consent", ()
        else:
            outcome, reasons = "not_randomized", ("eligibility undetermined",) if candidate.get("eligible") is None else ()
        self.screening.append(ScreeningOutcome(who, candidate["site"], outcome, screened, reasons))
        if randomized:
            self._subject(who, candidate, screened)

    def _subject(self, who: str, candidate: Mapping[str, Any], screened: date) -> None:
        arm = candidate["simulated_arm"]
        course = candidate["courses"][arm]
        randomized_on = date.fromisoformat(candidate["randomization_date"])
        record = candidate["screening_record"]
        self._form(who, self.protocol.screening_form, record, screened, "SCR")
        for visit in course["visits"]:
            on = date.fromisoformat(visit["date"])
            if on > self.cutoff:
                continue
            for form_id, values in visit["forms"].items():
                if isinstance(values, Mapping):
                    self._form(who, form_id, values, on, visit["visit"])
        given = []
        for dose in course["doses"]:
            on = date.fromisoformat(dose["date"])
            if on > self.cutoff:
                continue
            nominal = dose.get("nominal_dose") or {}
            self.doses.append((who, dose["drug"], on, "given" if dose["given"] else "held", nominal.get("value"),
                               nominal.get("unit"), dose.get("hold_reason")))
            if dose["given"]:
                given.append(on)
        for event in course["adverse_events"]:
            self._event(who, arm, event)
        self.subjects.append(self._record(who, candidate, course, arm, randomized_on, screened, given))

    def _record(self, who: str, candidate: Mapping[str, Any], course: Mapping[str, Any], arm: str, randomized_on: date,
                screened: date, given: list[date]) -> SubjectRecord:
        eot = course["end_of_treatment"]
        eot_date = date.fromisoformat(eot["date"])
        dropout = course.get("dropout")
        last_visit = max(date.fromisoformat(visit["date"]) for visit in course["visits"])
        withdrawal_date = withdrawal_reason = None
        if dropout and date.fromisoformat(dropout["date"]) <= self.cutoff:
            withdrawal_date, withdrawal_reason = date.fromisoformat(dropout["date"]), dropout["reason"]
            status = _LEAVING.get(withdrawal_reason, "withdrawn")
        elif last_visit <= self.cutoff:
            status = "completed"
        elif eot_date <= self.cutoff:
            status = "in_follow_up"
        else:
            status = "on_treatment"
        ended = eot_date <= self.cutoff
        characteristics = self._baseline(candidate["screening_record"])
        stratum = candidate.get("stratum") or ""
        strata = dict(part.split("=", 1) for part in stratum.split("/") if "=" in part)
        return SubjectRecord(
            subject_id=who,
            site=candidate["site"],
            arm_randomized=arm,
            randomization_date=randomized_on,
            arm_received=arm if given else None,
            strata=strata,
            screening_date=screened,
            consent_date=date.fromisoformat(candidate["consent_date"]) if candidate.get("consent_date") else None,
            first_dose_date=min(given) if given else None,
            last_dose_date=max(given) if given else None,
            end_of_treatment_date=eot_date if ended else None,
            end_of_treatment_reason=eot["reason"] if ended else None,
            status=status,
            withdrawal_date=withdrawal_date,
            withdrawal_reason=withdrawal_reason,
            eligible=candidate.get("eligible"),
            sex=candidate["screening_record"].get("sex"),
            diagnosis=candidate["screening_record"].get("diagnosis"),
            weight_kg=_number(candidate["screening_record"].get("weight_kg")),
            **characteristics,
        )

    def _baseline(self, record: Mapping[str, Any]) -> dict[str, float | None]:
        values, _derived = expression_values(self.protocol, record)
        pick = lambda method: _number(values.get(self.methods[method])) if method in self.methods else None  # noqa: E731
        return {
            "age_years": pick("age_in_years"),
            "creatinine_clearance_ml_min": pick("cockcroft_gault"),
            "steroid_mg_per_kg_day": pick("prednisone_equivalent_per_kg"),
        }

    # -- records ---------------------------------------------------------------------------------
    def _form(self, who: str, form_id: str, values: Mapping[str, Any], on: date, visit: str) -> None:
        items = self.items.get(form_id)
        if items is None:
            return
        result = values.get("result")
        for name, raw in values.items():
            item = items.get(name)
            if item is None or item.type not in ("quantity", "integer") or raw is None:
                continue
            amount, unit = (raw.get("value"), raw.get("unit")) if isinstance(raw, Mapping) else (raw, None)
            if amount is None:
                continue
            uln = values.get(f"{name}_uln")
            uln_value = self._normalized(form_id, items[f"{name}_uln"], uln) if isinstance(uln, Mapping) and f"{name}_uln" in items else None
            self.observations.append((who, form_id, name, on, self._normalized(form_id, item, raw), item.unit, visit,
                                      item.loinc, False, False, None, uln_value))
        if result in (_BELOW, _NOT_DETECTED) and form_id == self.cmv_form and self.cmv_item not in values:
            item = items[self.cmv_item]
            self.observations.append((who, form_id, item.id, on, None, item.unit, visit, item.loinc, True,
                                      result == _NOT_DETECTED, None, None))

    def _normalized(self, form_id: str, item: Item, raw: Any) -> float:
        amount, unit = (raw.get("value"), raw.get("unit")) if isinstance(raw, Mapping) else (raw, None)
        key = (form_id, item.id, unit)
        if key not in self.conversions:
            if item.unit is None:
                self.conversions[key] = (1.0, 0.0)
            else:
                offset, _ = to_primary_unit(item, 0.0, unit)
                one, _ = to_primary_unit(item, 1.0, unit)
                self.conversions[key] = (one - offset, offset)
        scale, offset = self.conversions[key]
        return float(amount) * scale + offset

    def _event(self, who: str, arm: str, event: Mapping[str, Any]) -> None:
        start = date.fromisoformat(event["start_date"])
        if start > self.cutoff:
            return
        end = date.fromisoformat(event["end_date"]) if event.get("end_date") else None
        related = set(event.get("related_to", ()))
        self.adverse_events.append(
            AdverseEventRecord(
                subject_id=who,
                term=event["ctcae_term"],
                start_date=start,
                grade=event.get("grade"),
                serious=bool(event.get("serious")),
                end_date=end if end is not None and end <= self.cutoff else None,
                relatedness={drug: ("possible" if drug in related else "not_related") for drug in self.drugs[arm]},
                outcome=event.get("outcome") if end is not None and end <= self.cutoff else "ongoing",
                from_lab="lab" in event,
            )
        )


def _number(value: Any) -> float | None:
    if isinstance(value, Mapping):
        value = value.get("value")
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
