"""The report's descriptive tables: baseline characteristics by arm, the CONSORT counts, summaries.

Why apart from ``report_results``: these are counts and summaries, not tests, and the report,
the JSON and the tests share them. CONSORT 2010 (flow diagram items 13a/13b) fixes the boxes:
assessed for eligibility, excluded (not meeting criteria, declined, other), randomized, allocated
and received / did not receive the allocated intervention, lost to follow-up and discontinued
(with reasons), analysed and excluded from the analysis (with reasons).
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cmvtrial.analysis.adsl import POPULATIONS

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.analysis.trial_data import TrialData

#: ADSL column, label and kind of each baseline characteristic shown.
BASELINE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("AGE", "Age (years)", "continuous"),
    ("SEX", "Sex", "categorical"),
    ("WEIGHTBL", "Weight (kg)", "continuous"),
    ("DIAGNOS", "Diagnosis", "categorical"),
    ("CRCLBL", "Creatinine clearance, Cockcroft-Gault (mL/min)", "continuous"),
    ("STEROIDBL", "Corticosteroid, prednisone equivalent (mg/kg/day)", "continuous"),
    ("CMVBLL10", "CMV-DNA at baseline (log10 copies/mL)", "continuous"),
    ("SITEID", "Site", "categorical"),
)


def jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers, NaN/inf as ``None``, dates as ISO text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.date().isoformat()
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, str):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _continuous(values: pd.Series) -> dict[str, Any]:
    data = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    if len(data) == 0:
        return {"n": 0, "mean": None, "sd": None, "median": None, "q1": None, "q3": None, "min": None, "max": None}
    return {
        "n": len(data),
        "mean": float(data.mean()),
        "sd": float(data.std(ddof=1)) if len(data) > 1 else None,
        "median": float(np.median(data)),
        # R's default quantile (type 7), which NumPy's default also is.
        "q1": float(np.quantile(data, 0.25)),
        "q3": float(np.quantile(data, 0.75)),
        "min": float(data.min()),
        "max": float(data.max()),
    }


def describe(frame: pd.DataFrame, columns: list[str], arms: list[str]) -> dict[str, Any]:
    """Per arm and column: n, mean, SD, median, quartiles, range (missing values left out, counted)."""
    out: dict[str, Any] = {}
    for arm in arms:
        rows = frame[frame["ARM"] == arm]
        out[arm] = {column: {**_continuous(rows[column]), "missing": int(rows[column].isna().sum())} for column in columns}
    return out


def baseline_table(population: pd.DataFrame, arms: list[str]) -> dict[str, Any]:
    """Baseline characteristics by arm and overall (``ARM`` is the population's analysis arm)."""
    groups = {**{arm: population[population["ARM"] == arm] for arm in arms}, "total": population}
    rows = []
    for column, label, kind in BASELINE_ROWS:
        if column not in population.columns or population[column].isna().all():
            continue
        if kind == "continuous":
            rows.append({"variable": column, "label": label, "kind": kind,
                         "values": {name: _continuous(group[column]) for name, group in groups.items()}})
        else:
            levels = sorted(str(v) for v in population[column].dropna().unique())
            values = {}
            for name, group in groups.items():
                counts = group[column].astype(str).value_counts()
                values[name] = {
                    level: {"n": int(counts.get(level, 0)),
                            "percent": round(100.0 * counts.get(level, 0) / len(group), 1) if len(group) else None}
                    for level in levels
                }
                values[name]["missing"] = {"n": int(group[column].isna().sum()), "percent": None}
            rows.append({"variable": column, "label": label, "kind": kind, "levels": levels, "values": values})
    return {"n": {name: len(group) for name, group in groups.items()}, "rows": rows}


def consort_counts(data: TrialData, adsl: pd.DataFrame, arms: list[str], population: str) -> dict[str, Any]:
    """The numbers of the CONSORT flow diagram (every box), from screening to analysis."""
    screening = data.screening
    outcomes = Counter(candidate.outcome for candidate in screening)
    by_criterion: Counter[str] = Counter()
    for candidate in screening:
        if candidate.outcome == "not_eligible":
            by_criterion.update(candidate.reasons or ("not recorded",))
    criteria = {criterion.id: criterion.text for criterion in data.protocol.eligibility}
    randomized = len(adsl)
    assessed = len(screening) if screening else randomized
    flag, arm_column, _label = POPULATIONS[population]
    allocation, follow_up, analysis = {}, {}, {}
    for arm in arms:
        rows = adsl[adsl["TRT01P"] == arm]
        allocation[arm] = {
            "allocated": len(rows),
            "received_allocated": int((rows["TRT01A"] == arm).sum()),
            "did_not_receive": int(rows["TRT01A"].isna().sum()),
            "received_other_arm": int((rows["TRT01A"].notna() & (rows["TRT01A"] != arm)).sum()),
        }
        stopped = rows[rows["EOSSTT"] == "DISCONTINUED"]
        follow_up[arm] = {
            "lost_to_follow_up": int((rows["STATUS"] == "lost_to_follow_up").sum()),
            "discontinued": len(stopped),
            "discontinued_reasons": dict(Counter(str(r) for r in stopped["DCSREAS"].fillna("not recorded"))),
            "completed": int((rows["EOSSTT"] == "COMPLETED").sum()),
            "ongoing": int((rows["EOSSTT"] == "ONGOING").sum()),
        }
        members = adsl[(adsl[arm_column] == arm) & (adsl[flag] == "Y")]
        excluded = _excluded(adsl, arm, population)
        analysis[arm] = {"analysed": len(members), "excluded": sum(excluded.values()), "excluded_reasons": excluded}
    return {
        "assessed": assessed,
        "excluded": assessed - randomized if screening else 0,
        "not_eligible": outcomes.get("not_eligible", 0),
        "not_eligible_by_criterion": {key: {"n": n, "text": criteria.get(key, key)}
                                      for key, n in sorted(by_criterion.items())},
        "declined_consent": outcomes.get("declined_consent", 0),
        "other_reasons": outcomes.get("not_randomized", 0),
        "randomized": randomized,
        "allocation": allocation,
        "follow_up": follow_up,
        "analysis": analysis,
        "population": population,
    }


def _excluded(adsl: pd.DataFrame, arm: str, population: str) -> dict[str, int]:
    """Subjects randomized to ``arm`` who are not in the population's analysis of that arm, by reason."""
    rows = adsl[adsl["TRT01P"] == arm]
    if population == "itt":
        return {}
    if population == "pp":
        reasons: Counter[str] = Counter()
        for text in rows.loc[rows["PPFL"] == "N", "PPEXCL"]:
            reasons.update(part for part in str(text).split("; ") if part)
        return dict(sorted(reasons.items()))
    out = {}
    no_dose = int((rows["SAFFL"] != "Y").sum())
    if no_dose:
        out["no dose given"] = no_dose
    other = int(((rows["SAFFL"] == "Y") & (rows["TRT01A"] != arm)).sum())
    if other:
        out["analysed in the arm received"] = other
    return out
