"""Pocock-Simon minimization with a random element (core/minimization.py)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmvtrial.core.minimization import (
    MinimizationDecision,
    ReplayRng,
    marginal_counts,
    minimization_assign,
)
from cmvtrial.core.randomization import HashStream
from cmvtrial.errors import InvalidInput

RATIO = {"il2_gcv": 1, "gcv": 1}


def assign(levels, counts, *, rng, p=0.85, weights=None, measure="range", ratio=RATIO):
    return minimization_assign(
        levels, counts, ratio, weights or dict.fromkeys(levels, 1.0), p, measure, rng=rng
    )


def test_hand_computed_range_scores_pick_the_preferred_arm():
    """counts: sex=F a:3 b:1; site=X a:0 b:2; weights sex 1, site 2.
    If a: sex (4,1) range 3, site (1,2) range 1 -> 3 + 2*1 = 5.
    If b: sex (3,2) range 1, site (0,3) range 3 -> 1 + 2*3 = 7.  Preferred: a."""
    counts = {"sex": {"F": {"a": 3, "b": 1}}, "site": {"X": {"b": 2}}}
    decision = minimization_assign(
        {"sex": "F", "site": "X"}, counts, {"a": 1, "b": 1}, {"sex": 1, "site": 2}, 0.8,
        rng=ReplayRng([0.5]),
    )
    assert decision.imbalance_by_arm == {"a": 5.0, "b": 7.0}
    assert decision.imbalance_by_factor == {"a": {"sex": 3.0, "site": 1.0}, "b": {"sex": 1.0, "site": 3.0}}
    assert decision.preferred_arm == "a" and decision.arm == "a"
    assert decision.draws == (0.5,) and decision.random_draw == 0.5


def test_hand_computed_variance_scores():
    """Same counts, population variance of the two counts.
    If a: sex (4,1) var 2.25, site (1,2) var 0.25 -> 2.25 + 2*0.25 = 2.75.
    If b: sex (3,2) var 0.25, site (0,3) var 2.25 -> 0.25 + 2*2.25 = 4.75."""
    counts = {"sex": {"F": {"a": 3, "b": 1}}, "site": {"X": {"b": 2}}}
    decision = minimization_assign(
        {"sex": "F", "site": "X"}, counts, {"a": 1, "b": 1}, {"sex": 1, "site": 2}, 0.8, "variance",
        rng=ReplayRng([0.1]),
    )
    assert decision.imbalance_by_arm == {"a": 2.75, "b": 4.75}
    assert decision.measure == "variance" and decision.arm == "a"


def test_random_element_sends_a_draw_at_or_above_p_to_the_other_arm():
    counts = {"sex": {"F": {"il2_gcv": 2}}}
    taken = assign({"sex": "F"}, counts, rng=ReplayRng([0.8499]))
    assert taken.preferred_arm == "gcv" and taken.arm == "gcv"
    other = assign({"sex": "F"}, counts, rng=ReplayRng([0.85]))
    assert other.preferred_arm == "gcv" and other.arm == "il2_gcv"
    assert "random element" in other.reason


def test_the_first_subject_is_random_with_no_preferred_arm():
    arms = Counter()
    for seed in range(200):
        decision = assign({"site": "01"}, {}, rng=random.Random(seed))
        assert decision.preferred_arm is None
        assert decision.tied_arms == ("gcv", "il2_gcv")
        assert len(decision.draws) == 1
        arms[decision.arm] += 1
    assert 60 < arms["gcv"] < 140


def test_a_tie_among_some_arms_is_broken_at_random():
    ratio = {"a": 1, "b": 1, "c": 1}
    counts = {"site": {"X": {"c": 1}}}  # a and b tie below c
    preferred = Counter()
    for seed in range(200):
        decision = assign({"site": "X"}, counts, rng=random.Random(seed), ratio=ratio, p=1.0)
        assert decision.tied_arms == ("a", "b")
        assert len(decision.draws) == 2
        assert decision.arm == decision.preferred_arm
        preferred[decision.preferred_arm] += 1
    assert set(preferred) == {"a", "b"} and min(preferred.values()) > 60


def test_replaying_recorded_draws_gives_the_same_decision():
    rng = random.Random(7)
    counts = {"sex": {"F": {"gcv": 1, "il2_gcv": 1}}, "site": {"1": {"gcv": 1}}}
    first = assign({"sex": "F", "site": "1"}, counts, rng=rng)
    again = assign({"sex": "F", "site": "1"}, counts, rng=ReplayRng(first.draws))
    assert again == first


def sequence_imbalance(n, factor_levels, method, seed, p=0.85):
    """Sum over factors and levels of |count(il2_gcv) - count(gcv)| after n subjects."""
    rng = HashStream.for_stratum(seed, "simulation")
    covariates = random.Random(seed)
    allocated = []
    for _ in range(n):
        levels = {name: covariates.choice(levels) for name, levels in factor_levels.items()}
        if method == "minimization":
            counts = marginal_counts(allocated, factor_levels)
            arm = assign(levels, counts, rng=rng, p=p).arm
        else:
            arm = "il2_gcv" if rng.random() < 0.5 else "gcv"
        allocated.append((levels, arm))
    final = marginal_counts(allocated, factor_levels)
    return sum(
        abs(by_arm.get("il2_gcv", 0) - by_arm.get("gcv", 0))
        for levels in final.values()
        for by_arm in levels.values()
    )


def test_minimization_keeps_marginal_imbalance_well_below_simple_randomization():
    factors = {"site": ["1", "2", "3", "4"], "sex": ["F", "M"], "steroid": ["low", "high"]}
    trials = 60
    minimized = sum(sequence_imbalance(50, factors, "minimization", s) for s in range(trials)) / trials
    simple = sum(sequence_imbalance(50, factors, "simple", s) for s in range(trials)) / trials
    assert minimized < 0.4 * simple


@given(st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=60), st.integers(0, 10**6))
def test_with_one_factor_and_p_one_each_level_stays_within_one(levels, seed):
    rng = random.Random(seed)
    allocated = []
    for level in levels:
        counts = marginal_counts(allocated, ["site"])
        decision = assign({"site": level}, counts, rng=rng, p=1.0)
        allocated.append(({"site": level}, decision.arm))
        by_level = marginal_counts(allocated, ["site"])["site"][level]
        assert abs(by_level.get("il2_gcv", 0) - by_level.get("gcv", 0)) <= 1


@given(
    st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(1, 3), min_size=2, max_size=3),
    st.dictionaries(
        st.sampled_from(["x", "y", "z"]), st.integers(0, 5), max_size=3
    ),
    st.floats(0, 1, exclude_max=True),
    st.sampled_from(["range", "variance"]),
)
def test_any_decision_is_an_arm_of_the_ratio_and_carries_its_reasons(ratio, level_counts, u, measure):
    counts = {"f": {"L": {arm: c for arm, c in level_counts.items() if arm in ratio}}}
    p = 1.0 / len(ratio) + 0.1
    decision = minimization_assign({"f": "L"}, counts, ratio, {"f": 1}, p, measure, rng=ReplayRng([u, u]))
    assert isinstance(decision, MinimizationDecision)
    assert decision.arm in ratio
    assert set(decision.imbalance_by_arm) == set(ratio)
    best = min(decision.imbalance_by_arm.values())
    assert set(decision.tied_arms) == {a for a, s in decision.imbalance_by_arm.items() if s == best}
    if decision.preferred_arm is not None:
        assert decision.preferred_arm in decision.tied_arms
    assert decision.reason


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"p": 0.4}, "preferred_probability"),
        ({"p": 1.01}, "preferred_probability"),
        ({"p": float("nan")}, "preferred_probability"),
        ({"measure": "entropy"}, "imbalance"),
        ({"weights": {"sex": 0}}, "weights.sex"),
        ({"weights": {"sex": -1.0}}, "weights.sex"),
        ({"weights": {}}, "weights"),
        ({"levels": {}}, "factors.sex"),
        ({"levels": {"sex": "F", "bmi": "high"}}, "factors.bmi"),
        ({"counts": {"sex": {"F": {"placebo": 1}}}}, "counts.sex.F"),
        ({"counts": {"sex": {"F": {"gcv": -1}}}}, "counts.sex.F.gcv"),
        ({"ratio": {"gcv": 1}}, "ratio"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(change, field):
    args = {"levels": {"sex": "F"}, "counts": {}, "ratio": RATIO, "weights": {"sex": 1.0}, "p": 0.85, "measure": "range"}
    args.update(change)
    with pytest.raises(InvalidInput) as caught:
        minimization_assign(
            args["levels"], args["counts"], args["ratio"], args["weights"], args["p"], args["measure"],
            rng=random.Random(0),
        )
    assert caught.value.details["field"] == field


def test_a_random_source_out_of_range_is_refused():
    with pytest.raises(InvalidInput):
        assign({"sex": "F"}, {}, rng=ReplayRng([1.0]))
    with pytest.raises(InvalidInput):
        assign({"sex": "F"}, {}, rng=ReplayRng([]))
