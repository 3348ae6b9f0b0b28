"""A deterministic hand-made trial snapshot for the report tests (no simulator, no database).

`make_trial_data()` builds a `TrialData` of protocol sle-cmv-il2 the way the data-capture service
will: screening outcomes, randomized subjects at three sites, weekly CMV-DNA until a result below
the assay limit (then end of treatment), week-12 immune markers (some missing), hematology and
chemistry at every visit, doses with one subject never dosed and one poorly compliant, adverse
events including a serious one and one that interrupted a drug. The R fixture in
tests/reference/report/ was computed on the ADaM datasets this trial gives (see its README).
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from cmvtrial.analysis.trial_data import (
    AdverseEventRecord,
    DataQuality,
    DoseRecord,
    Observation,
    ScreeningOutcome,
    SubjectRecord,
    TrialData,
)
from cmvtrial.protocols import load_shipped_protocol

PROTOCOL_ID = "sle-cmv-il2"
START = date(2025, 3, 3)
SITES = ("PKUPH", "SITE02", "SITE03")
LLOQ_COPIES = 137 * 1.1  # the protocol's assay limit in copies/mL (domain.md §3.2 × §3.1)
# Typical baseline value of each immune marker (the unit is the protocol item's).
MARKERS = {
    ("lymphocyte_subsets", "nk_abs"): 90.0, ("lymphocyte_subsets", "nk_pct"): 11.0,
    ("lymphocyte_subsets", "cd3_abs"): 700.0, ("lymphocyte_subsets", "cd4_abs"): 350.0,
    ("lymphocyte_subsets", "cd8_abs"): 300.0, ("lymphocyte_subsets", "cd19_abs"): 120.0,
    ("lymphocyte_subsets", "treg_pct"): 5.0, ("lymphocyte_subsets", "th1_pct"): 18.0,
    ("lymphocyte_subsets", "th2_pct"): 4.0, ("lymphocyte_subsets", "th17_pct"): 1.2,
    ("immunoglobulins", "igg"): 11.0, ("immunoglobulins", "iga"): 2.2, ("immunoglobulins", "igm"): 1.1,
    ("complement", "c3"): 0.7, ("complement", "c4"): 0.14,
    ("cytokines", "ifn_gamma"): 6.0, ("cytokines", "tnf_alpha"): 7.0,
    ("cmv_cd8", "cmv_specific_cd8_pct"): 2.0, ("cmv_cd8", "cmv_specific_cd8_abs"): 6.0,
    ("sledai", "sledai_2k_total"): 10.0,
}
LABS = {  # form, item: (baseline, unit, uln)
    ("hematology", "anc"): (3.2, "10*9/L", None), ("hematology", "platelets"): (160.0, "10*9/L", None),
    ("hematology", "hemoglobin"): (118.0, "g/L", None), ("chemistry", "serum_creatinine"): (0.8, "mg/dL", None),
    ("chemistry", "alt"): (28.0, "U/L", 40.0), ("chemistry", "ast"): (26.0, "U/L", 40.0),
}


def protocol():
    return load_shipped_protocol(PROTOCOL_ID)[0]


def make_trial_data(n: int = 60, seed: int = 20251126, cutoff: date | None = None) -> TrialData:
    rng = np.random.default_rng(seed)
    proto = protocol()
    subjects, observations, doses, events, screening = [], [], [], [], []
    loinc = {(form.id, path): item.loinc for form in proto.forms for path, item in form.item_paths().items()}

    def observe(who, form, item, on, value, unit, visit, **extra):
        observations.append(Observation(who, form, item, on, value, unit, visit, loinc.get((form, item)), **extra))

    for k in range(n):
        who = f"S{k + 1:03d}"
        site = SITES[k % 3]
        arm = "il2_gcv" if (k // 2) % 2 == 0 else "gcv"
        screened = START + timedelta(days=4 * k)
        randomized = screened + timedelta(days=int(rng.integers(0, 4)))
        on = lambda day: randomized + timedelta(days=int(day))  # noqa: E731
        log_v0 = rng.normal(4.2, 0.5)
        slope = rng.normal(-0.16 if arm == "il2_gcv" else -0.11, 0.03)
        observe(who, "screening", "cmv_dna", screened, round(10 ** (log_v0 - 0.05)), "copies/mL", "SCR")
        dropout_day = int(rng.integers(15, 40)) if k % 11 == 5 else None
        responder = k % 10 != 3
        if not responder or dropout_day is not None:
            slope = rng.normal(-0.01, 0.003)
        eot_day = None
        visit_days = [0]
        for week in range(1, 13):
            day = 7 * week + int(rng.integers(-2, 3))
            if dropout_day is not None and day > dropout_day:
                break
            visit_days.append(day)
            value = log_v0 + slope * day + rng.normal(0, 0.2)
            if 10 ** value < LLOQ_COPIES:
                eot_day = day
                break
        for day in visit_days:
            code = "BL" if day == 0 else "TW"
            value = log_v0 + slope * day + rng.normal(0, 0.2) if day else log_v0
            if day and day == eot_day:
                detected = bool(rng.random() < 0.5)
                observe(who, "cmv_load", "cmv_dna", on(day), None, "copies/mL", code, below_lloq=True,
                        not_detected=not detected)
            else:
                observe(who, "cmv_load", "cmv_dna", on(day), round(10 ** max(value, np.log10(LLOQ_COPIES) + 0.01)),
                        "copies/mL", code)
            for (form, item), (base, unit, uln) in LABS.items():
                drop = 0.55 if item == "anc" and k % 9 == 0 and day >= 14 else 1.0
                observe(who, form, item, on(day), round(base * drop * float(np.exp(rng.normal(0, 0.12))), 2), unit, code,
                        uln=uln)
        w12_day = 84 + int(rng.integers(-4, 5))
        in_follow_up = dropout_day is None
        for (form, item), base in MARKERS.items():
            value0 = base * float(np.exp(rng.normal(0, 0.25)))
            observe(who, form, item, on(0), round(value0, 3), None, "BL")
            if in_follow_up and rng.random() > 0.1:
                effect = 1.35 if (arm == "il2_gcv" and item in ("nk_abs", "nk_pct", "treg_pct")) else 1.0
                observe(who, form, item, on(w12_day), round(value0 * effect * float(np.exp(rng.normal(0, 0.2))), 3), None,
                        "W12")
        if in_follow_up and responder:
            observe(who, "cmv_load", "cmv_dna", on(w12_day), None, "copies/mL", "W12", below_lloq=True, not_detected=True)
        elif in_follow_up:
            observe(who, "cmv_load", "cmv_dna", on(w12_day), round(10 ** (log_v0 + slope * w12_day)), "copies/mL", "W12")
        end = eot_day if eot_day is not None else (dropout_day if dropout_day is not None else visit_days[-1])
        dosed = k != 7
        adherence = 0.5 if k == 12 else 1.0
        if dosed:
            for day in range(0, end):
                if rng.random() < adherence:
                    doses.append(DoseRecord(who, "ganciclovir", on(day), "given", 5.0, "mg/kg"))
                if arm == "il2_gcv" and day % 2 == 0:
                    doses.append(DoseRecord(who, "interleukin-2", on(day), "given", 1.0, "[MIU]"))
            if k % 9 == 0 and end > 16:
                doses.append(DoseRecord(who, "ganciclovir", on(15), "held", reason="Absolute neutrophil count below 500 cells/uL"))
        status = "withdrawn" if dropout_day is not None else "completed"
        subjects.append(SubjectRecord(
            subject_id=who, site=site, arm_randomized=arm, randomization_date=randomized,
            arm_received=None, strata={"site": site}, screening_date=screened, consent_date=screened,
            end_of_treatment_date=on(eot_day) if eot_day is not None else None,
            end_of_treatment_reason="cmv_negative" if eot_day is not None else None,
            status=status, withdrawal_date=on(dropout_day) if dropout_day is not None else None,
            withdrawal_reason="withdrew consent" if dropout_day is not None else None,
            eligible=None if k == 20 else True, age_years=float(rng.integers(18, 70)), sex="F" if rng.random() < 0.9 else "M",
            weight_kg=round(float(rng.normal(57, 8)), 1), diagnosis="SLE",
            creatinine_clearance_ml_min=round(float(rng.normal(95, 25)), 1),
            steroid_mg_per_kg_day=round(float(rng.uniform(0.1, 0.9)), 2),
        ))
        screening.append(ScreeningOutcome(who, site, "randomized", screened))
        if dosed and k % 3 == 1:
            grade = int(rng.integers(1, 4))
            events.append(AdverseEventRecord(
                who, "Neutrophil count decreased" if k % 8 == 1 else "Injection site reaction", on(10), grade,
                serious=k == 10, end_date=on(20),
                relatedness={"ganciclovir": "probable", **({"interleukin-2": "not_related"} if arm == "il2_gcv" else {})},
                action_taken={"ganciclovir": "DRUG INTERRUPTED"} if k == 13 else {}, outcome="RECOVERED/RESOLVED"))
    for j in range(15):
        reasons = ("INC2",) if j % 3 else ("INC3", "EXC4b")
        screening.append(ScreeningOutcome(f"F{j + 1:03d}", SITES[j % 3], "not_eligible", START + timedelta(days=3 * j), reasons))
    for j in range(5):
        screening.append(ScreeningOutcome(f"D{j + 1:03d}", SITES[j % 3], "declined_consent", START + timedelta(days=5 * j)))
    last = max(o.date for o in observations)
    return TrialData.create(
        protocol=proto, data_cutoff=cutoff or last, subjects=subjects, observations=observations, doses=doses,
        adverse_events=events, screening=screening,
        data_quality=DataQuality(open_queries=3, answered_queries=1, unsigned_visits=2), source="test fixture",
    )
