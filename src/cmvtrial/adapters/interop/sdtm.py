"""SDTM datasets (SDTMIG 3.4) from the export snapshot: the trial design and the subjects' data.

What maps where — all driven by the protocol's own annotations (``sdtm:`` on items), so a third
protocol exports without code changes:

- **TS, TA, TE, TV** from the protocol (sdtm_design.py).
- **DM**: one record per screened candidate (screen failures too, with ARMNRS); RFSTDTC is the
  randomization date (the visit plan's day 0), RFXSTDTC/RFXENDTC the first and last dose given,
  RFENDTC the last dose once treatment has ended, RFPENDTC the last date known; SEX and the other
  items annotated ``domain: DM``; AGE from the protocol's ``age_in_years`` derived value at
  screening. BRTHDTC is never exported (pseudonymized data, see services/export_data.py).
- **DS**: consent and randomization (protocol milestones), screen failure, end of treatment and
  end of study (disposition events): completion, or the withdrawal's reason as its CDISC term
  (core/disposition.py: WITHDRAWAL BY SUBJECT, LOST TO FOLLOW-UP, DEATH, ...) on its date. A
  subject who died has DTHFL/DTHDTC in DM, from a fatal adverse event or the withdrawal for death.
- **SV**: every visit done (SVOCCUR Y) or missed (N); planned and cancelled visits are not visits.
- **EX**: every dose given (held and missed doses are not exposure; they are in ODM and FHIR).
- **AE**: CTCAE term and grade (AETOXGR, the number only: standards.md §3.1), seriousness flags,
  outcome; action and causality over the study drugs (AEACN MULTIPLE when the drugs' actions differ).
- **CM**, **MH**: records from items annotated ``domain: CM`` (one per form or group occurrence)
  and ``domain: MH`` (the coded diagnosis, as its codelist label).
- **LB, VS, QS** (sdtm_findings.py): one record per value of an item with an SDTM test code: original result and unit
  as entered, standardized result and unit as normalized; a CMV-DNA result below the assay's limit
  is ``<LLOQ`` (LBSTRESN null) and one not detected ``NOT DETECTED``; a ULN the protocol pairs with
  the item gives the reference range and LBNRIND; --LOBXFL marks the last result on or before the
  first dose.

``--SEQ`` numbers each subject's records in date order; ``--DY`` counts from RFSTDTC (no day 0);
EPOCH is screening before randomization, treatment up to the end of treatment, follow-up after
(sdtm_records.py, shared by every domain).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from cmvtrial.adapters.interop import sdtm_design as design
from cmvtrial.adapters.interop.sdtm_findings import findings
from cmvtrial.adapters.interop.sdtm_records import (
    SubjectRecords,
    canonical_or_as_given,
    iso,
    parse_date,
    study_day,
)
from cmvtrial.adapters.interop.sdtm_spec import DATASETS, ORDER, Dataset
from cmvtrial.adapters.interop.terminology import DOSE_FORMS, MULTIPLE, ROUTES, cdisc_unit
from cmvtrial.core.adverse_events import SeriousnessCriterion
from cmvtrial.core.derived_values import age_in_years
from cmvtrial.core.disposition import COMPLETED, COMPLETION, ENDED, exit_reason

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol
    from cmvtrial.services.export_data import ExportData, ExportSubject, ExportValue

#: DM variables never exported, whatever the protocol annotates: they identify a person.
WITHHELD = frozenset({"BRTHDTC"})
_RELATEDNESS_ORDER = ("definite", "probable", "possible", "unlikely", "not_related")


@dataclass(frozen=True, eq=False)
class SdtmPackage:
    """The datasets by name (columns in SDTMIG order) and the study they belong to."""

    study_id: str
    protocol: Protocol
    datasets: dict[str, pd.DataFrame]

    def spec(self, name: str) -> Dataset:
        return DATASETS[name]


class _Builder(SubjectRecords):
    """The subject domains: DM, DS, SV, EX, AE, CM and MH."""

    # -- DM ----------------------------------------------------------------------------------------
    def age(self, screening: Mapping[str, ExportValue]) -> float | None:
        for spec in self.protocol.derived_values:
            if spec.method == "age_in_years" and len(spec.inputs) == 2:
                born, on = (parse_date(screening[name].text) if name in screening else None for name in spec.inputs)
                if born is not None and on is not None and on >= born:
                    return float(age_in_years(born, on))
        return None

    def dm(self) -> list[dict[str, Any]]:
        arms = {arm.id: arm for arm in self.protocol.arms}
        country = self.protocol.countries[0] if len(self.protocol.countries) == 1 else None
        records = []
        for subject in self.data.subjects:
            screening = self.screening_values(subject)
            given = self.given(subject)
            first = min((d.administered_on for d in given), default=None)
            last = max((d.administered_on for d in given), default=None)
            ended = subject.end_of_treatment_date is not None or subject.status in ENDED
            fatal = [ae for ae in self.data.adverse_events_of(subject.key) if ae.outcome == "FATAL"]
            deaths = [ae.resolution_date or ae.onset_date for ae in fatal]
            if subject.status == "died":
                deaths.append(subject.end_of_study_date)
            death = min((day for day in deaths if day is not None), default=None)
            died = bool(fatal) or subject.status == "died"
            arm = arms.get(subject.arm or "")
            actual = arms.get(subject.arm_received or "")
            if arm is None:
                reason = "SCREEN FAILURE" if subject.status == "screen_failed" else "NOT ASSIGNED"
            elif not given:
                reason = "ASSIGNED, NOT TREATED"
            else:
                reason = None
            record = {
                **self.ids(subject, "DM"), "SUBJID": subject.subject_id,
                "RFSTDTC": iso(subject.randomization_date), "RFENDTC": iso(last) if ended else None,
                "RFXSTDTC": iso(first), "RFXENDTC": iso(last), "RFICDTC": iso(subject.consent_date),
                "RFPENDTC": iso(self.last_known(subject)), "DTHDTC": iso(death), "DTHFL": "Y" if died else None,
                "SITEID": subject.site, "AGE": self.age(screening), "AGEU": "YEARS", "SEX": None, "RACE": None,
                "ARMCD": design.armcd(arm.id) if arm else None, "ARM": arm.label if arm else None,
                "ACTARMCD": design.armcd(actual.id) if actual else None, "ACTARM": actual.label if actual else None,
                "ARMNRS": reason, "ACTARMUD": None, "COUNTRY": country,
                "DMDTC": iso(subject.screening_date), "DMDY": study_day(subject.screening_date, self.reference(subject)),
            }
            record["AGEU"] = "YEARS" if record["AGE"] is not None else None
            for path, value in screening.items():
                definition = self.item(value.form, path)
                sdtm = definition.sdtm if definition is not None else None
                if sdtm is not None and sdtm.domain == "DM" and sdtm.variable and sdtm.variable not in WITHHELD:
                    record[sdtm.variable] = value.text if value.text is not None else value.entered_value
            records.append(record)
        return records

    def last_known(self, subject: ExportSubject) -> date | None:
        dates: list[date] = [d for d in (subject.consent_date, subject.screening_date, subject.randomization_date,
                                         subject.end_of_treatment_date, subject.end_of_study_date) if d is not None]
        dates += [v.actual_date for v in self.data.visits_of(subject.key) if v.status == "done" and v.actual_date]
        dates += [d.administered_on for d in self.data.doses_of(subject.key)]
        dates += [v.sample_date for v in self.data.values_of(subject.key) if v.sample_date]
        for ae in self.data.adverse_events_of(subject.key):
            dates += [d for d in (ae.onset_date, ae.resolution_date) if d is not None]
        return max(dates, default=None)

    # -- DS ----------------------------------------------------------------------------------------
    def ds(self) -> list[dict[str, Any]]:
        records = []
        for subject in self.data.subjects:
            events: list[tuple[date | None, str, str, str]] = []
            if subject.consent_date is not None:
                events.append((subject.consent_date, "INFORMED CONSENT OBTAINED", "INFORMED CONSENT OBTAINED",
                               "PROTOCOL MILESTONE"))
            if subject.randomization_date is not None:
                events.append((subject.randomization_date, "RANDOMIZED", "RANDOMIZED", "PROTOCOL MILESTONE"))
            if subject.status == "screen_failed":
                events.append((subject.screening_date or subject.status_changed_on, _failure_text(subject),
                               "SCREEN FAILURE", "DISPOSITION EVENT"))
            if subject.end_of_treatment_date is not None:
                why = subject.end_of_treatment_reason or "end of treatment"
                events.append((subject.end_of_treatment_date, f"COMPLETED TREATMENT: {why}"[:200], "COMPLETED",
                               "DISPOSITION EVENT"))
            if subject.status in ENDED:
                events.append(_end_of_study(subject))
            for on, term, decoded, category in sorted(events, key=lambda e: (e[0] or date.max)):
                epoch = self.epoch(subject, on)
                if category == "PROTOCOL MILESTONE" or decoded == "SCREEN FAILURE":
                    epoch = "SCREENING"  # consent and randomization close the screening epoch
                elif term.startswith("COMPLETED TREATMENT"):
                    epoch = "TREATMENT"
                records.append({**self.ids(subject, "DS"), "DSTERM": term, "DSDECOD": decoded, "DSCAT": category,
                                "EPOCH": epoch, "DSSTDTC": iso(on), "DSSTDY": study_day(on, self.reference(subject)),
                                "_date": on})
        return records

    # -- SV ----------------------------------------------------------------------------------------
    def sv(self) -> list[dict[str, Any]]:
        records = []
        for subject in self.data.subjects:
            for visit in self.data.visits_of(subject.key):
                if visit.status not in ("done", "missed"):
                    continue
                done = visit.status == "done"
                on = visit.actual_date if done else None
                records.append({
                    **self.ids(subject, "SV"), "VISITNUM": design.visit_number(self.protocol, visit.code, visit.index),
                    "VISIT": design.visit_name(self.protocol, visit.code, visit.index), "SVPRESP": "Y",
                    "SVOCCUR": "Y" if done else "N", "SVREASOC": None if done else (visit.deviation or None),
                    "EPOCH": self.epoch(subject, on or visit.target_date), "SVSTDTC": iso(on), "SVENDTC": iso(on),
                    "SVSTDY": study_day(on, self.reference(subject)), "SVENDY": study_day(on, self.reference(subject))})
        return records

    # -- EX ----------------------------------------------------------------------------------------
    def frequency(self, subject: ExportSubject, drug: str) -> str | None:
        arms = [arm for arm in self.protocol.arms if arm.id == subject.arm] + list(self.protocol.arms)
        for arm in arms:
            for regimen in arm.regimens:
                if regimen.drug.casefold() == drug.casefold():
                    return regimen.frequency.cdisc
        return None

    def ex(self) -> list[dict[str, Any]]:
        records = []
        for subject in self.data.subjects:
            for dose in self.given(subject):
                unit = canonical_or_as_given(dose.unit)
                when = dose.administered_at or dose.administered_on
                visit = dose.visit
                records.append({
                    **self.ids(subject, "EX"), "EXTRT": dose.drug.upper(), "EXDOSE": dose.dose,
                    "EXDOSU": cdisc_unit(unit), "EXDOSFRM": DOSE_FORMS.get(dose.route or ""),
                    "EXDOSFRQ": self.frequency(subject, dose.drug),
                    "EXROUTE": ROUTES.get(dose.route or "", (dose.route or "").upper() or None),
                    "VISITNUM": design.visit_number(self.protocol, *visit) if visit else None,
                    "EPOCH": self.epoch(subject, dose.administered_on), "EXSTDTC": iso(when), "EXENDTC": iso(when),
                    "EXSTDY": study_day(dose.administered_on, self.reference(subject)),
                    "EXENDY": study_day(dose.administered_on, self.reference(subject)), "_date": dose.administered_on})
        return records

    # -- AE ----------------------------------------------------------------------------------------
    def ae(self) -> list[dict[str, Any]]:
        records = []
        for subject in self.data.subjects:
            for event in self.data.adverse_events_of(subject.key):
                assessed = [a for a in event.drug_assessments if a.get("relatedness") != "not_applicable"]
                actions = {str(a["action_taken"]) for a in assessed if a.get("action_taken")}
                related = [str(a["relatedness"]) for a in assessed if a.get("relatedness")]
                strongest = min(related, key=lambda r: _RELATEDNESS_ORDER.index(r) if r in _RELATEDNESS_ORDER else 99,
                                default=None)
                flags = set()
                for criterion in event.seriousness_criteria:
                    try:
                        flags.add(SeriousnessCriterion(criterion).sdtm_flag)
                    except ValueError:
                        continue
                code = float(event.meddra_code) if event.meddra_code and event.meddra_code.isdigit() else None
                record = {
                    **self.ids(subject, "AE"), "AESPID": str(event.number), "AETERM": event.verbatim_term,
                    "AELLT": event.ctcae_term, "AELLTCD": code if event.ctcae_term else None,
                    "AEDECOD": event.ctcae_term or event.term, "AEPTCD": None, "AEHLT": None, "AEHLTCD": None,
                    "AEHLGT": None, "AEHLGTCD": None, "AEBODSYS": None, "AEBDSYCD": None, "AESOC": None,
                    "AESOCCD": None, "AESER": "Y" if event.serious else "N",
                    "AEACN": (actions.pop() if len(actions) == 1 else MULTIPLE) if actions else None,
                    "AEREL": strongest.upper().replace("_", " ") if strongest else None,
                    "AEOUT": event.outcome, "AETOXGR": str(event.grade) if event.grade is not None else None,
                    "EPOCH": self.epoch(subject, event.onset_date), "AESTDTC": iso(event.onset_date),
                    "AEENDTC": iso(event.resolution_date), "AESTDY": study_day(event.onset_date, self.reference(subject)),
                    "AEENDY": study_day(event.resolution_date, self.reference(subject)), "_date": event.onset_date}
                for flag in ("AESDTH", "AESHOSP", "AESLIFE", "AESDISAB", "AESCONG", "AESMIE"):
                    record[flag] = ("Y" if flag in flags else "N") if event.serious else None
                records.append(record)
        return records

    # -- CM and MH ---------------------------------------------------------------------------------
    def interventions_and_history(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        cm: list[dict[str, Any]] = []
        mh: list[dict[str, Any]] = []
        for subject in self.data.subjects:
            groups: dict[tuple[int, str, int], dict[str, Any]] = defaultdict(dict)
            for value in self.data.values_of(subject.key):
                definition = self.item(value.form, value.item)
                sdtm = definition.sdtm if definition is not None else None
                if sdtm is None or sdtm.domain not in ("CM", "MH") or not sdtm.variable or definition is None:
                    continue
                prefix = value.item.rpartition(".")[0]
                shown = self.shown(value, definition)
                if sdtm.domain == "MH":
                    form = self.forms[value.form]
                    mh.append({**self.ids(subject, "MH"), "MHTERM": shown,
                               "MHCAT": (definition.label or definition.id).upper(), "MHPRESP": "Y", "MHOCCUR": "Y",
                               "EPOCH": self.epoch(subject, value.sample_date), "MHDTC": iso(value.sample_date),
                               "MHDY": study_day(value.sample_date, self.reference(subject)), "_date": value.sample_date,
                               "_form": form.id})
                    continue
                record = groups[(value.instance_id, prefix, value.group_repeat)]
                record.setdefault("_value", value)
                record[sdtm.variable] = shown if definition.type != "quantity" else value.number
                if definition.type == "quantity" and sdtm.variable == "CMDOSE":
                    record["CMDOSU"] = cdisc_unit(definition.unit)
            for (_instance, prefix, _repeat), fields in groups.items():
                value = fields.pop("_value")
                form = self.forms[value.form]
                group = self.item(value.form, prefix) if prefix else None
                category = (group.id.replace("_", " ") if group is not None else form.name).upper()
                start = parse_date(fields.get("CMSTDTC"))
                cm.append({**self.ids(subject, "CM"), "CMTRT": fields.get("CMTRT"), "CMCAT": category[:200],
                           "CMDOSE": fields.get("CMDOSE"), "CMDOSU": fields.get("CMDOSU"),
                           "CMDOSFRQ": None, "VISITNUM": design.visit_number(self.protocol, value.visit_code,
                                                                                 value.visit_index),
                           "EPOCH": self.epoch(subject, start or value.sample_date), "CMSTDTC": fields.get("CMSTDTC"),
                           "CMENDTC": fields.get("CMENDTC"),
                           "CMENRF": "ONGOING" if start is None and fields.get("CMENDTC") is None and
                           value.form == self.protocol.screening_form else None,
                           "CMSTDY": study_day(start, self.reference(subject)),
                           "CMENDY": study_day(parse_date(fields.get("CMENDTC")), self.reference(subject)),
                           "_date": start or value.sample_date})
        return cm, mh

def _end_of_study(subject: ExportSubject) -> tuple[date | None, str, str, str]:
    """The end-of-study disposition event: DSTERM as reported (the reason and its words), DSDECOD the
    CDISC term (C66727). A subject ended without a recorded reason (before services/end_of_study.py
    existed) keeps the date the status changed and the term OTHER."""
    reason = exit_reason(subject.end_of_study_reason) or (COMPLETION if subject.status == COMPLETED else None)
    on = subject.end_of_study_date or subject.status_changed_on
    if reason is None:
        return on, "WITHDRAWN FROM THE TRIAL", "OTHER", "DISPOSITION EVENT"
    term = reason.label.upper() + (f": {subject.end_of_study_details}" if subject.end_of_study_details else "")
    return on, term[:200], reason.dsdecod, "DISPOSITION EVENT"


def _failure_text(subject: ExportSubject) -> str:
    parts = []
    for reason in subject.screen_failure_reasons:
        criterion, detail = reason.get("criterion"), reason.get("detail") or reason.get("text")
        parts.append(" ".join(str(p) for p in (criterion, detail) if p) or str(reason.get("category") or ""))
    text = "; ".join(p for p in parts if p) or "SCREEN FAILURE"
    return text[:200]


def _frame(spec: Dataset, records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Records as a dataset: SDTMIG column order, Req/Exp always present, Perm only when used,
    ``--SEQ`` in date order within each subject, helper columns (``_*``) dropped."""
    rows = list(records)
    seq = next((v.name for v in spec.variables if v.name.endswith("SEQ") and v.name != "TSSEQ"), None)
    if seq is not None:
        rows.sort(key=lambda r: (r["USUBJID"], r.get("_date") or date.max, str(r.get(f"{spec.name}TESTCD") or ""),
                                 str(r.get(f"{spec.name}TRT") or r.get(f"{spec.name}TERM") or "")))
        counters: dict[str, int] = defaultdict(int)
        for row in rows:
            counters[row["USUBJID"]] += 1
            row[seq] = float(counters[row["USUBJID"]])
    columns = [v.name for v in spec.variables
               if v.core in ("Req", "Exp") or any(row.get(v.name) not in (None, "") for row in rows)]
    extra = sorted({key for row in rows for key in row if key not in spec.names and not key.startswith("_")})
    frame = pd.DataFrame.from_records([{c: row.get(c) for c in columns + extra} for row in rows],
                                      columns=columns + extra)
    for variable in spec.variables:
        if variable.name in frame.columns and variable.type == "Num":
            frame[variable.name] = pd.to_numeric(frame[variable.name], errors="coerce").astype(float)
    return frame


def build_sdtm(data: ExportData) -> SdtmPackage:
    """Every dataset that has records (the trial design and DM always), in :data:`ORDER`."""
    builder = _Builder(data)
    protocol, study = data.protocol, data.study_id
    cm, mh = builder.interventions_and_history()
    records: dict[str, list[dict[str, Any]] | pd.DataFrame] = {
        "TS": design.trial_summary(protocol, study), "TA": design.trial_arms(protocol, study),
        "TE": design.trial_elements(protocol, study), "TV": design.trial_visits(protocol, study),
        "DM": builder.dm(), "DS": builder.ds(), "SV": builder.sv(), "EX": builder.ex(), "AE": builder.ae(),
        "CM": cm, "MH": mh, **findings(builder),
    }
    datasets: dict[str, pd.DataFrame] = {}
    for name in ORDER:
        found = records.get(name)
        if found is None:
            continue
        if isinstance(found, pd.DataFrame):
            spec = DATASETS[name]
            extra = [c for c in found.columns if c not in spec.names]
            frame = found[[v.name for v in spec.variables if v.name in found.columns] + extra].copy()
            for variable in spec.variables:
                if variable.type == "Num" and variable.name in frame.columns:
                    frame[variable.name] = pd.to_numeric(frame[variable.name], errors="coerce").astype(float)
            datasets[name] = frame
        elif found or name == "DM":
            datasets[name] = _frame(DATASETS[name], found)
    return SdtmPackage(study, protocol, datasets)
