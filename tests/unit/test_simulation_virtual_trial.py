"""One virtual trial, patient by patient: seeded, screened by the real eligibility engine, and laid
out in the protocol's visits, forms and units so that a loader is a thin loop over services."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from cmvtrial.core.eligibility import evaluate_eligibility
from cmvtrial.core.screening_record import screening_record_from_data
from cmvtrial.errors import InvalidInput
from cmvtrial.simulation.cohort import simulate_cohort
from cmvtrial.simulation import virtual_trial
from cmvtrial.simulation.virtual_trial import simulate_trial
from simulation_support import PROTOCOLS, design, protocol, scenario

START = date(2026, 3, 2)


@pytest.fixture(scope="module", params=PROTOCOLS)
def trial(request):
    return simulate_trial(protocol(request.param), scenario(request.param), seed=11, start_date=START)


def test_same_seed_same_trial_and_another_seed_another():
    first = simulate_trial(protocol("nct04225780"), scenario("nct04225780"), 5, START).to_dict()
    again = simulate_trial(protocol("nct04225780"), scenario("nct04225780"), 5, START).to_dict()
    other = simulate_trial(protocol("nct04225780"), scenario("nct04225780"), 6, START).to_dict()
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert json.dumps(first, sort_keys=True) != json.dumps(other, sort_keys=True)


def test_planned_size_is_randomized_and_screening_is_counted(trial):
    summary = trial.summary()
    planned = protocol(trial.protocol).population.target_enrollment
    assert summary["randomized"] == planned == len(trial.randomized)
    assert summary["screened"] == len(trial.candidates) > planned
    assert sum(entry["randomized"] for entry in summary["arms"].values()) == planned


def test_screening_records_are_valid_and_verdicts_are_the_engines(trial):
    for candidate in trial.candidates:
        record = candidate["screening_record"]
        screening_record_from_data(record)  # the public format (issue 3)
        verdict = evaluate_eligibility(protocol(trial.protocol), record)
        assert candidate["eligible"] is verdict.eligible
        assert candidate["screen_failure_criteria"] == [c.id for c in verdict.reasons_not_eligible]
        if candidate["randomized"]:
            assert verdict.eligible is True and candidate["consented"]


@pytest.mark.parametrize("protocol_id", PROTOCOLS)
def test_every_screen_failure_reason_fails_for_its_criterion(protocol_id):
    """Each reason the scenario lists makes the real engine exclude the candidate for that criterion."""
    s, d = scenario(protocol_id), design(protocol_id)
    rng = np.random.default_rng(0)
    for failure in s.screening.failures:
        for _ in range(5):
            draws = virtual_trial._population_draws(rng, s.population, 1)
            values = {name: array[0] for name, array in draws.items()}
            population = s.population
            values.update(alt_uln=population.alt_uln_u_per_l.value, ast_uln=population.ast_uln_u_per_l.value,
                          bilirubin_uln=population.total_bilirubin_uln_umol_per_l.value)
            values.update({name: float(dist.sample(rng, ())) for name, dist in failure.overrides.items()})
            record = virtual_trial._screening_record(values, START, d, reports_iu=False)
            record.update(failure.record)
            verdict = evaluate_eligibility(protocol(protocol_id), record)
            assert verdict.eligible is False, failure.reason
            assert set(failure.expected_criteria) <= {c.id for c in verdict.reasons_not_eligible}, failure.reason


def test_courses_follow_the_protocol(trial):
    d = design(trial.protocol)
    forms_by_visit = d.visit_forms
    for patient in trial.randomized:
        assert set(patient["courses"]) == {d.il2_arm, d.control_arm}
        assert patient["simulated_arm"] in patient["courses"]
        for arm, course in patient["courses"].items():
            visits = course["visits"]
            assert visits[0]["visit"] == d.baseline_visit and visits[0]["day"] == 0
            assert [v["day"] for v in visits] == sorted(v["day"] for v in visits)
            for visit in visits:
                assert set(visit["forms"]) <= set(forms_by_visit[visit["visit"]])
                cmv = visit["forms"].get("cmv_load")
                if cmv is not None and cmv["result"] == "quantified":
                    assert cmv["cmv_dna"]["unit"] in ("copies/mL", "[IU]/mL") and cmv["cmv_dna"]["value"] > 0
            treatment = [v for v in visits if v["visit"] == d.treatment_visit]
            for visit in treatment:
                offset = visit["day"] - d.treatment_first_day - (visit["repeat"] - 1) * d.treatment_every_days
                assert -d.treatment_window.before <= offset <= d.treatment_window.after
            end = course["end_of_treatment"]
            if course["cmv_negative"]:
                assert end["reason"] == "cmv_negative" and treatment[-1]["day"] == end["day"]
                assert treatment[-1]["forms"]["cmv_load"]["result"] != "quantified"
            drugs = {dose["drug"] for dose in course["doses"]}
            assert (d.il2_regimen.drug in drugs) == (arm == d.il2_arm) or end["day"] == 0
            for dose in course["doses"]:
                assert dose["day"] < end["day"]
                if dose["drug"] == d.il2_regimen.drug:
                    assert dose["day"] % d.il2_interval_days == 0
            il2_events = {"injection_site_reaction", "fever", "flu_like_symptoms"}
            if arm == d.control_arm:
                assert not il2_events & {event["id"] for event in course["adverse_events"]}


def test_both_arms_are_the_same_patient(trial):
    """The courses differ only by treatment: same baseline visit, same dropout."""
    d = design(trial.protocol)
    for patient in trial.randomized:
        il2, control = patient["courses"][d.il2_arm], patient["courses"][d.control_arm]
        assert il2["visits"][0]["forms"]["cmv_load"] == control["visits"][0]["forms"]["cmv_load"]
        if il2["dropout"] and control["dropout"]:
            assert il2["dropout"]["day"] == control["dropout"]["day"]


def test_ganciclovir_is_held_when_counts_fall():
    trial = simulate_trial(protocol("sle-cmv-il2"), scenario("sle-cmv-il2"), 2, START)
    held = [dose for p in trial.randomized for c in p["courses"].values() for dose in c["doses"] if not dose["given"]]
    assert held and all(dose["drug"] == "ganciclovir" and dose["hold_reason"] for dose in held)


def test_nothing_to_randomize_is_refused():
    with pytest.raises(InvalidInput):
        simulate_trial(protocol("sle-cmv-il2"), scenario("sle-cmv-il2"), 1, START, n_randomized=0)


def test_same_seed_opposite_arms_gives_the_same_patients():
    d, s = design("sle-cmv-il2"), scenario("sle-cmv-il2")
    shape = (1, 500)
    on_il2 = simulate_cohort(np.random.default_rng(9), s, d, np.ones(shape, bool))
    on_control = simulate_cohort(np.random.default_rng(9), s, d, np.zeros(shape, bool))
    assert np.array_equal(on_il2.baseline_log10, on_control.baseline_log10)
    assert np.array_equal(on_il2.dropout_day, on_control.dropout_day)
    # IL-2 only ever helps in this model: no patient clears later on IL-2 than on control... on average
    assert on_il2.time[on_il2.event].mean() <= on_control.time[on_control.event].mean()
