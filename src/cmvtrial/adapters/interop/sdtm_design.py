"""SDTM trial design datasets (TS, TA, TE, TV) from the protocol file alone.

Why from the protocol: the trial design model describes the plan, not what happened, and the plan
is the protocol file (arms and regimens, the visit plan with its windows, the registry record's
facts). Nothing here reads the database, so the design datasets of an unstarted trial are the same
as those of a finished one. SDTMIG 3.4 §7; TS parameter codes are CDISC TSPARMCD (C66738).

Study days: cmvtrial's visit plan counts from randomization as day 0; SDTM has no day 0, and the
exports take RFSTDTC = the randomization date, so a plan day d ≥ 0 is SDTM study day d + 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from cmvtrial.adapters.interop.terminology import ROUTES

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Arm, Protocol, Visit

SDTMIG_VERSION = "3.4"
SCREENING_ELEMENT, FOLLOW_UP_ELEMENT = "SCRN", "FU"
EPOCHS = {"screening": "SCREENING", "randomization": "TREATMENT", "end_of_treatment": "FOLLOW-UP"}

_PHASES = {("phase1",): "PHASE I TRIAL", ("phase2",): "PHASE II TRIAL", ("phase3",): "PHASE III TRIAL",
           ("phase4",): "PHASE IV TRIAL", ("phase1", "phase2"): "PHASE I/II TRIAL",
           ("phase2", "phase3"): "PHASE II/III TRIAL", ("early_phase1",): "PHASE 0 TRIAL",
           ("not_applicable",): "NOT APPLICABLE"}
_BLINDING = {"none": "OPEN LABEL", "single": "SINGLE BLIND", "double": "DOUBLE BLIND", "triple": "DOUBLE BLIND",
             "quadruple": "DOUBLE BLIND"}
_STOP_RULES = {"cmv_negativity": "CMV negativity (the protocol's stop rule)", "fixed_days": "a fixed number of days"}


def armcd(arm_id: str) -> str:
    """ARMCD: the protocol's arm id in capitals (at most 20 characters, SDTMIG 3.4 §7.2.1)."""
    return arm_id.upper()[:20]


def element_code(arm: Arm) -> str:
    """ETCD of an arm's treatment element (at most 8 characters)."""
    return arm.id.upper()[:8]


def visit_number(protocol: Protocol, code: str, index: int = 0) -> float:
    """VISITNUM: the visit's place in the plan times 10, plus the occurrence of a repeating visit
    in hundredths (``TW3`` of the third visit in the plan is 30.03), so numbers sort as visits do."""
    for position, visit in enumerate(protocol.visits, start=1):
        if visit.code == code:
            return round(10.0 * position + index / 100.0, 2)
    return round(990.0 + index / 100.0, 2)  # a visit of another protocol version's plan


def visit_name(protocol: Protocol, code: str, index: int = 0) -> str:
    try:
        name = protocol.visit(code).name
    except Exception:  # noqa: BLE001 - a visit outside the plan keeps its code
        name = code
    return f"{name} {index}" if index else name


def study_day_of_plan(day: int) -> int:
    return day + 1 if day >= 0 else day


def _ts_rows(protocol: Protocol) -> list[tuple[str, str, str | None, str | None]]:
    """(TSPARMCD, TSPARM, TSVAL, TSVCDREF) of every parameter the protocol states."""
    rows: list[tuple[str, str, str | None, str | None]] = [
        ("TITLE", "Trial Title", protocol.title, None),
        ("SPONSOR", "Clinical Study Sponsor", protocol.sponsor, None),
    ]
    rows += [("REGID", "Registry Identifier", entry.id, entry.registry) for entry in protocol.registry_ids]
    phase = _PHASES.get(tuple(protocol.phase))
    if phase:
        rows.append(("TPHASE", "Trial Phase Classification", phase, "CDISC CT"))
    design, population = protocol.design, protocol.population
    rows += [
        ("STYPE", "Study Type", design.study_type.upper(), "CDISC CT"),
        ("INTMODEL", "Intervention Model", design.model.upper().replace("_", " "), "CDISC CT"),
        ("RANDOM", "Trial is Randomized", "Y" if design.allocation == "randomized" else "N", "CDISC CT"),
        ("TBLIND", "Trial Blinding Schema", _BLINDING[design.masking], "CDISC CT"),
        ("TTYPE", "Trial Type", design.purpose.upper().replace("_", " "), "CDISC CT"),
        ("INDIC", "Trial Disease/Condition Indication", population.condition, None),
        ("PLANSUB", "Planned Number of Subjects", str(population.target_enrollment), None),
        ("SEXPOP", "Sex of Participants", {"all": "BOTH", "female": "F", "male": "M"}[population.sex], "CDISC CT"),
        ("HLTSUBJI", "Healthy Subject Indicator", "Y" if population.healthy_volunteers else "N", "CDISC CT"),
        ("NARMS", "Planned Number of Arms", str(len(protocol.arms)), None),
    ]
    if population.min_age_years is not None:
        rows.append(("AGEMIN", "Planned Minimum Age of Subjects", f"P{population.min_age_years}Y", "ISO 8601"))
    if population.max_age_years is not None:
        rows.append(("AGEMAX", "Planned Maximum Age of Subjects", f"P{population.max_age_years}Y", "ISO 8601"))
    experimental = [arm for arm in protocol.arms if arm.role == "experimental"]
    for arm in experimental:
        rows += [("TRT", "Investigational Therapy or Treatment", regimen.drug.upper(), None) for regimen in arm.regimens]
    rows += [("COMPTRT", "Comparative Treatment Name", arm.label, None) for arm in protocol.arms if arm.role != "experimental"]
    ratio = protocol.randomization.ratio
    if experimental and experimental[0].id in ratio:
        rows.append(("RANDQT", "Randomization Quotient", f"{ratio[experimental[0].id] / sum(ratio.values()):g}", None))
    for arm in protocol.arms:
        for regimen in arm.regimens:
            rows.append(("ROUTE", "Route of Administration", ROUTES.get(regimen.route, regimen.route.upper()), "CDISC CT"))
    rows.append(("SDTIGVER", "SDTM IG Version", SDTMIG_VERSION, None))
    seen: set[tuple[str, str | None]] = set()
    unique = []
    for row in rows:
        if (row[0], row[2]) not in seen:
            seen.add((row[0], row[2]))
            unique.append(row)
    return unique


def trial_summary(protocol: Protocol, study_id: str) -> pd.DataFrame:
    """TS; a value over 200 characters continues in TSVAL1, TSVAL2 … (SDTMIG 3.4 §7.6.1)."""
    records = []
    counters: dict[str, int] = {}
    for code, parameter, value, reference in _ts_rows(protocol):
        counters[code] = counters.get(code, 0) + 1
        record: dict[str, object] = {"STUDYID": study_id, "DOMAIN": "TS", "TSSEQ": float(counters[code]),
                                     "TSPARMCD": code, "TSPARM": parameter, "TSVAL": value, "TSVALCD": None,
                                     "TSVCDREF": reference, "TSVCDVER": None}
        text = value or ""
        if len(text) > 200:
            record["TSVAL"] = text[:200]
            for part, start in enumerate(range(200, len(text), 200), start=1):
                record[f"TSVAL{part}"] = text[start:start + 200]
        records.append(record)
    return pd.DataFrame.from_records(records)


def _drugs(arm: Arm) -> str:
    return " + ".join(regimen.drug for regimen in arm.regimens)


def trial_arms(protocol: Protocol, study_id: str) -> pd.DataFrame:
    records = []
    for arm in protocol.arms:
        code = armcd(arm.id)
        base = {"STUDYID": study_id, "DOMAIN": "TA", "ARMCD": code, "ARM": arm.label}
        records += [
            {**base, "TAETORD": 1.0, "ETCD": SCREENING_ELEMENT, "ELEMENT": "Screening",
             "TABRANCH": f"Randomized to {arm.label}", "TATRANS": None, "EPOCH": "SCREENING"},
            {**base, "TAETORD": 2.0, "ETCD": element_code(arm), "ELEMENT": _drugs(arm), "TABRANCH": None,
             "TATRANS": None, "EPOCH": "TREATMENT"},
            {**base, "TAETORD": 3.0, "ETCD": FOLLOW_UP_ELEMENT, "ELEMENT": "Follow-up", "TABRANCH": None,
             "TATRANS": None, "EPOCH": "FOLLOW-UP"},
        ]
    return pd.DataFrame.from_records(records)


def trial_elements(protocol: Protocol, study_id: str) -> pd.DataFrame:
    follow_ups = [visit for visit in protocol.visits if visit.anchor == "end_of_treatment"]
    last = follow_ups[-1].name if follow_ups else "the last visit"
    records = [{"ETCD": SCREENING_ELEMENT, "ELEMENT": "Screening", "TESTRL": "Informed consent",
                "TEENRL": "Randomization", "TEDUR": None}]
    for arm in protocol.arms:
        stops = sorted({_STOP_RULES.get(regimen.stop.rule, regimen.stop.rule) for regimen in arm.regimens})
        records.append({"ETCD": element_code(arm), "ELEMENT": _drugs(arm),
                        "TESTRL": f"Randomization to {arm.label}: first dose of {_drugs(arm)}",
                        "TEENRL": f"End of treatment: {'; '.join(stops)}", "TEDUR": None})
    records.append({"ETCD": FOLLOW_UP_ELEMENT, "ELEMENT": "Follow-up", "TESTRL": "End of treatment",
                    "TEENRL": f"{last} done", "TEDUR": None})
    return pd.DataFrame.from_records([{"STUDYID": study_id, "DOMAIN": "TE", **record} for record in records])


def _visit_rule(visit: Visit) -> str:
    window = f"window -{visit.window.before_days}/+{visit.window.after_days} days"
    anchor = {"screening": "screening", "randomization": "randomization", "end_of_treatment": "end of treatment"}[
        visit.anchor]
    if visit.repeat is not None:
        until = {"cmv_negative": "CMV negativity", "end_of_treatment": "end of treatment"}[visit.repeat.until]
        return (f"Every {visit.repeat.every_days} days from day {visit.repeat.first_day} after {anchor} until {until} "
                f"({window}); occurrence n is visit number {{base}} + n/100")
    return f"Day {visit.day} after {anchor} ({window})"


def trial_visits(protocol: Protocol, study_id: str) -> pd.DataFrame:
    records = []
    for visit in protocol.visits:
        index = 1 if visit.repeat is not None else 0
        number = visit_number(protocol, visit.code, index)
        day = visit.repeat.first_day if visit.repeat is not None else visit.day
        records.append({
            "STUDYID": study_id, "DOMAIN": "TV", "VISITNUM": number, "VISIT": visit_name(protocol, visit.code, index),
            "VISITDY": float(study_day_of_plan(day)) if visit.anchor == "randomization" and day is not None else None,
            "ARMCD": None, "TVSTRL": _visit_rule(visit).replace("{base}", f"{visit_number(protocol, visit.code):g}"),
            "TVENRL": None})
    return pd.DataFrame.from_records(records)
