"""Safety tables of the report: adverse events by arm, term and worst grade; serious events; events
leading to a dose hold or stop; laboratory shift tables by CTCAE grade.

Why here and pure: the safety issue (issue 5) defines the tables the report shows; they are counts
over the snapshot, by the arm actually received, in the safety population (ICH E3 §12.2: at least
one dose). Conventions, stated in the report:

- **treatment-emergent** events only: started on or after the first dose and on or before the
  data cut-off; a subject counts once per row (subjects, %) and every event counts (events);
- **worst grade** per subject and term; a missing grade counts as "grade unknown";
- **related** to a drug when the causality is possible, probable or definite (ICH E2A);
- **dose action**: an event whose action taken with any drug is an interruption, reduction or
  withdrawal; administrations held are also counted by their recorded reason;
- **lab shifts**: for each safety measure whose LOINC code a CTCAE v5 term grades, the grade of
  the baseline value (the last on or before randomization) against the worst grade after it. The
  worst post-baseline value is the lowest for a "decreased" term and the highest for an
  "increased" one — grading is monotone in the value (a property test of ``core.ctcae``), so
  grading that one value gives the worst grade. When the laboratory's limit needed to tell grade 0
  from 1 was not recorded the category is "0-1".
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cmvtrial.core import ctcae
from cmvtrial.core.adverse_events import ActionTaken, Relatedness
from cmvtrial.errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.analysis.derivations import AnalysisSetup
    from cmvtrial.analysis.trial_data import TrialData

DOSE_ACTIONS = (ActionTaken.DRUG_INTERRUPTED.value, ActionTaken.DOSE_REDUCED.value, ActionTaken.DRUG_WITHDRAWN.value)
UNDETERMINED = "0-1"
MISSING = "missing"
SHIFT_CATEGORIES: tuple[str, ...] = ("0", UNDETERMINED, "1", "2", "3", "4", MISSING)


def _pct(count: int, total: int) -> float | None:
    return round(100.0 * count / total, 1) if total else None


def safety_tables(data: TrialData, adsl: pd.DataFrame, setup: AnalysisSetup) -> dict[str, Any]:
    """Every safety table, keyed as docs/report.md lists them."""
    population = adsl[adsl["SAFFL"] == "Y"]
    arms = [setup.treated_arm, setup.reference_arm]
    totals = {arm: int((population["TRT01A"] == arm).sum()) for arm in arms}
    arm_of = dict(zip(population["USUBJID"], population["TRT01A"], strict=True))
    first_dose = dict(zip(population["USUBJID"], population["TRTSDT"], strict=True))
    events = [
        event
        for event in data.adverse_events
        if event.subject_id in arm_of
        and event.start_date <= data.data_cutoff
        and not pd.isna(first_dose[event.subject_id])
        and pd.Timestamp(event.start_date) >= first_dose[event.subject_id]
    ]
    drugs = sorted({r.drug for arm in setup.protocol.arms for r in arm.regimens})
    return {
        "population": "safety",
        "n": totals,
        "arms": arms,
        "overview": _overview(events, arm_of, totals, drugs),
        "by_term": _by_term(events, arm_of, totals),
        "serious": _listing([e for e in events if e.serious], arm_of),
        "dose_action": _listing([e for e in events if set(e.action_taken.values()) & set(DOSE_ACTIONS)], arm_of),
        "doses_held": _doses_held(data, arm_of, totals),
        "lab_shifts": lab_shifts(data, adsl, setup, arm_of, arms),
        "not_treatment_emergent": len(data.adverse_events) - len(events),
        "conventions": __doc__.split("Conventions, stated in the report:")[1].strip() if __doc__ else "",
    }


def _related(event: Any, drug: str) -> bool:
    value = next((v for d, v in event.relatedness.items() if d.casefold() == drug.casefold()), None)
    try:
        return value is not None and Relatedness(value).is_related
    except ValueError:
        return False


def _overview(events: list[Any], arm_of: dict[str, str], totals: dict[str, int], drugs: list[str]) -> list[dict[str, Any]]:
    categories: list[tuple[str, Any]] = [
        ("Any adverse event", lambda e: True),
        ("Grade 3 or higher", lambda e: e.grade is not None and e.grade >= 3),
        ("Serious", lambda e: e.serious),
        *[(f"Related to {drug}", functools.partial(_related, drug=drug)) for drug in drugs],
        ("Leading to a dose interruption, reduction or withdrawal",
         lambda e: bool(set(e.action_taken.values()) & set(DOSE_ACTIONS))),
        ("Fatal (grade 5)", lambda e: e.grade == 5 or (e.outcome or "").upper() == "FATAL"),
    ]
    rows = []
    for label, keep in categories:
        chosen = [e for e in events if keep(e)]
        row: dict[str, Any] = {"category": label}
        for arm, total in totals.items():
            in_arm = [e for e in chosen if arm_of[e.subject_id] == arm]
            subjects = len({e.subject_id for e in in_arm})
            row[arm] = {"subjects": subjects, "percent": _pct(subjects, total), "events": len(in_arm)}
        rows.append(row)
    return rows


def _by_term(events: list[Any], arm_of: dict[str, str], totals: dict[str, int]) -> list[dict[str, Any]]:
    worst: dict[tuple[str, str], int] = {}
    counts: Counter[tuple[str, str]] = Counter()
    for event in events:
        key = (event.term, event.subject_id)
        counts[(event.term, arm_of[event.subject_id])] += 1
        grade = event.grade if event.grade is not None else 0
        worst[key] = max(worst.get(key, 0), grade)
    rows = []
    for term in sorted({e.term for e in events}):
        row: dict[str, Any] = {"term": term}
        for arm, total in totals.items():
            grades = [g for (t, s), g in worst.items() if t == term and arm_of[s] == arm]
            row[arm] = {
                "subjects": len(grades),
                "percent": _pct(len(grades), total),
                "events": counts[(term, arm)],
                "worst_grade": {str(g): grades.count(g) for g in range(1, 6) if grades.count(g)}
                | ({"unknown": grades.count(0)} if grades.count(0) else {}),
            }
        rows.append(row)
    rows.sort(key=lambda r: (-sum(r[arm]["subjects"] for arm in totals), r["term"]))
    return rows


def _listing(events: list[Any], arm_of: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "subject": e.subject_id,
            "arm": arm_of[e.subject_id],
            "term": e.term,
            "grade": e.grade,
            "serious": e.serious,
            "start_date": e.start_date.isoformat(),
            "end_date": e.end_date.isoformat() if e.end_date else None,
            "outcome": e.outcome,
            "relatedness": dict(e.relatedness),
            "action_taken": dict(e.action_taken),
        }
        for e in sorted(events, key=lambda e: (e.start_date, e.subject_id, e.term))
    ]


def _doses_held(data: TrialData, arm_of: dict[str, str], totals: dict[str, int]) -> list[dict[str, Any]]:
    doses = data.doses[(data.doses["status"] == "held") & data.doses["subject_id"].isin(arm_of)
                       & (data.doses["date"] <= data.cutoff_timestamp)]
    if doses.empty:
        return []
    doses = doses.assign(arm=doses["subject_id"].map(arm_of), reason=doses["reason"].fillna("no reason recorded"))
    rows = []
    for (drug, reason), group in doses.groupby(["drug", "reason"], sort=True):
        row: dict[str, Any] = {"drug": drug, "reason": reason}
        for arm, total in totals.items():
            in_arm = group[group["arm"] == arm]
            subjects = in_arm["subject_id"].nunique()
            row[arm] = {"subjects": int(subjects), "percent": _pct(int(subjects), total), "administrations": len(in_arm)}
        rows.append(row)
    return rows


@functools.lru_cache(maxsize=65536)
def _grade(term: str, value: float, unit: str, lln: float | None, uln: float | None, baseline: float | None) -> str:
    try:
        return str(ctcae.grade(term, value, unit, lln=lln, uln=uln, baseline=baseline).grade)
    except InvalidInput as error:  # a limit that could change the grade was not recorded, or a bad value
        return UNDETERMINED if error.details.get("field") in ("lln", "uln") else MISSING


def _limit(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def lab_shifts(
    data: TrialData, adsl: pd.DataFrame, setup: AnalysisSetup, arm_of: dict[str, str], arms: list[str]
) -> list[dict[str, Any]]:
    """Baseline grade × worst post-baseline grade per CTCAE-graded safety measure and arm."""
    table = ctcae.shipped_table()
    measures = [m for e in setup.protocol.endpoints if e.analysis == "adverse_event_summary" for m in e.measures]
    randomized = adsl.set_index("USUBJID")["RANDDT"]
    observations = data.observations[(data.observations["date"] <= data.cutoff_timestamp)
                                     & data.observations["subject_id"].isin(arm_of)]
    out = []
    for path in measures:
        form, item_id = path.split(".", 1)
        item = setup.protocol.item(form, item_id)
        terms = table.terms_for_loinc(item.loinc) if item.loinc else []
        if not terms or item.unit is None:
            continue
        term = terms[0]
        decreasing = term.lab is not None and term.lab.direction == "decreased"
        uses_baseline = term.lab is not None and "baseline" in term.lab.uses
        rows = observations[(observations["form"] == form) & (observations["item"] == item_id) & observations["value"].notna()]
        rows = rows.assign(after=rows["date"] > rows["subject_id"].map(randomized)).sort_values(["subject_id", "date"])
        base = rows[~rows["after"]].groupby("subject_id").tail(1).set_index("subject_id")
        post = rows[rows["after"]].sort_values("value", ascending=decreasing, kind="stable")
        worst = post.groupby("subject_id").head(1).set_index("subject_id")
        shift: dict[str, dict[str, dict[str, int]]] = {
            arm: {b: dict.fromkeys(SHIFT_CATEGORIES, 0) for b in SHIFT_CATEGORIES} for arm in arms
        }
        subjects = pd.DataFrame({"arm": pd.Series(arm_of)})
        subjects = subjects.join(base[["value", "lln", "uln"]]).join(worst[["value", "lln", "uln"]], rsuffix="_post")
        for arm, value, lln, uln, post_value, post_lln, post_uln in subjects.itertuples(index=False):
            baseline_value = None if np.isnan(value) else float(value)
            before = MISSING if baseline_value is None else _grade(term.term, baseline_value, item.unit, _limit(lln),
                                                                   _limit(uln), None)
            after = MISSING if np.isnan(post_value) else _grade(
                term.term, float(post_value), item.unit, _limit(post_lln), _limit(post_uln),
                baseline_value if uses_baseline else None)
            shift[arm][before][after] += 1
        out.append({"term": term.term, "item": path, "label": item.label, "unit": item.unit,
                    "direction": term.lab.direction if term.lab else None, "shift": shift})
    return out
