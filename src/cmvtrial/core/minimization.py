"""Pocock-Simon minimization with a random element: each new subject goes, with a set probability,
to the arm that keeps the prognostic factors most balanced.

Why: with few subjects per site and several prognostic factors, stratified blocks fragment into
many half-filled strata; minimization balances each factor's margins instead (Pocock & Simon,
Biometrics 1975;31:103). The random element (the preferred arm is taken with probability ``p``,
another arm otherwise) keeps the next assignment unpredictable (ICH E9 §2.3.1).

The algorithm, for a new subject with level ``l_f`` of each factor ``f``:

1. for each candidate arm ``a``, pretend the subject is in ``a``; for each factor take the counts
   of every arm at level ``l_f`` (including the pretended subject), divide each by the arm's
   ratio weight, and measure their spread: ``range`` (max - min) or ``variance`` (population);
2. the arm's score is the factor-weighted sum of those spreads; the preferred arm has the lowest;
3. ties among the lowest are broken at random (by ratio weight) with one draw; when every arm
   ties — the first subject, for instance — there is no preferred arm and one draw picks an arm by
   ratio weight;
4. otherwise one draw ``u``: ``u < p`` gives the preferred arm; else ``(u - p) / (1 - p)`` picks
   among the other arms by ratio weight.

Scores are exact fractions, so a tie is a tie. The decision keeps every number it used and the
draws in order, so an auditor can replay it with :class:`ReplayRng`. Pure: the caller passes the
counts and the ``rng`` (anything with ``random() -> float`` in [0, 1)).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Protocol

from cmvtrial.core.randomization import validate_ratio, weighted_pick
from cmvtrial.errors import InvalidInput

ImbalanceMeasure = Literal["range", "variance"]
MEASURES: tuple[str, ...] = ("range", "variance")

#: counts[factor][level][arm] = number of subjects already allocated with that level to that arm.
FactorCounts = Mapping[str, Mapping[str, Mapping[str, int]]]


class RandomSource(Protocol):
    def random(self) -> float: ...


class ReplayRng:
    """Replays recorded draws, to re-derive an audited decision; running out is an error."""

    def __init__(self, draws: Sequence[float]) -> None:
        self._draws = list(draws)

    def random(self) -> float:
        if not self._draws:
            raise InvalidInput("the recorded draws ran out during replay", field="draws")
        return self._draws.pop(0)


@dataclass(frozen=True)
class MinimizationDecision:
    """An assignment and its reasons: the scores per arm, the preferred arm and the draws used."""

    arm: str
    preferred_arm: str | None
    imbalance_by_arm: dict[str, float]
    imbalance_by_factor: dict[str, dict[str, float]]
    tied_arms: tuple[str, ...]
    random_draw: float
    draws: tuple[float, ...]
    preferred_probability: float
    measure: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "arm": self.arm,
            "preferred_arm": self.preferred_arm,
            "imbalance_by_arm": self.imbalance_by_arm,
            "imbalance_by_factor": self.imbalance_by_factor,
            "tied_arms": list(self.tied_arms),
            "random_draw": self.random_draw,
            "draws": list(self.draws),
            "preferred_probability": self.preferred_probability,
            "measure": self.measure,
            "reason": self.reason,
        }


def marginal_counts(
    allocated: Iterable[tuple[Mapping[str, str], str]], factor_names: Iterable[str]
) -> dict[str, dict[str, dict[str, int]]]:
    """Counts per factor, level and arm from previous allocations given as (levels, arm) pairs."""
    names = list(factor_names)
    counts: dict[str, dict[str, dict[str, int]]] = {name: {} for name in names}
    for levels, arm in allocated:
        for name in names:
            if name not in levels:
                raise InvalidInput(
                    f"a previous allocation has no level for factor '{name}'", field=f"factors.{name}"
                )
            by_arm = counts[name].setdefault(str(levels[name]), {})
            by_arm[arm] = by_arm.get(arm, 0) + 1
    return counts


def _spread(values: list[Fraction], measure: str) -> Fraction:
    if measure == "range":
        return max(values) - min(values)
    mean = sum(values, Fraction(0)) / len(values)
    return sum(((v - mean) ** 2 for v in values), Fraction(0)) / len(values)


def _check_probability(p: float, arm_count: int) -> Fraction:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
        raise InvalidInput("the preferred-arm probability must be a number", field="preferred_probability", value=p)
    exact = Fraction(p)
    if not Fraction(1, arm_count) <= exact <= 1:
        raise InvalidInput(
            f"the preferred-arm probability must lie between 1/{arm_count} and 1",
            field="preferred_probability",
            value=p,
        )
    return exact


def _check_weights(weights: Mapping[str, float]) -> dict[str, Fraction]:
    if not isinstance(weights, Mapping) or not weights:
        raise InvalidInput("minimization needs at least one factor with a weight", field="weights")
    checked: dict[str, Fraction] = {}
    for name in sorted(weights):
        weight = weights[name]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise InvalidInput(
                f"the weight of factor '{name}' must be a positive number", field=f"weights.{name}", value=weight
            )
        checked[name] = Fraction(weight)
    return checked


def _draw(rng: RandomSource, draws: list[float]) -> float:
    u = rng.random()
    if isinstance(u, bool) or not isinstance(u, (int, float)) or not 0 <= u < 1:
        raise InvalidInput("the random source must return a number in [0, 1)", field="rng", value=u)
    draws.append(float(u))
    return float(u)


def minimization_assign(
    factors_of_new: Mapping[str, str],
    counts: FactorCounts,
    arms_ratio: Mapping[str, int],
    weights: Mapping[str, float],
    preferred_probability: float,
    imbalance: ImbalanceMeasure = "range",
    *,
    rng: RandomSource,
) -> MinimizationDecision:
    """Assign one subject by Pocock-Simon minimization (see the module docstring for the steps)."""
    ratio = validate_ratio(arms_ratio)
    factor_weights = _check_weights(weights)
    p = _check_probability(preferred_probability, len(ratio))
    if imbalance not in MEASURES:
        raise InvalidInput(
            f"unknown imbalance measure '{imbalance}'; use one of {', '.join(MEASURES)}",
            field="imbalance",
            value=imbalance,
        )
    unknown = sorted(set(factors_of_new) - set(factor_weights))
    if unknown:
        raise InvalidInput(f"unknown minimization factor '{unknown[0]}'", field=f"factors.{unknown[0]}")
    for name in factor_weights:
        if factors_of_new.get(name) is None:
            raise InvalidInput(f"the new subject has no level for factor '{name}'", field=f"factors.{name}")

    current: dict[str, dict[str, int]] = {}
    for name in factor_weights:
        level = str(factors_of_new[name])
        by_arm = dict(counts.get(name, {}).get(level, {}))
        for arm, count in by_arm.items():
            if arm not in ratio:
                raise InvalidInput(f"counts name unknown arm '{arm}'", field=f"counts.{name}.{level}", value=arm)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise InvalidInput("a count must be a whole number >= 0", field=f"counts.{name}.{level}.{arm}", value=count)
        current[name] = {arm: by_arm.get(arm, 0) for arm in ratio}

    detail: dict[str, dict[str, Fraction]] = {}
    scores: dict[str, Fraction] = {}
    for candidate in ratio:
        detail[candidate] = {}
        for name, by_arm in current.items():
            scaled = [
                Fraction(by_arm[arm] + (1 if arm == candidate else 0), weight)
                for arm, weight in ratio.items()
            ]
            detail[candidate][name] = _spread(scaled, imbalance)
        scores[candidate] = sum(
            (factor_weights[name] * value for name, value in detail[candidate].items()), Fraction(0)
        )

    best = min(scores.values())
    tied = tuple(arm for arm in ratio if scores[arm] == best)
    draws: list[float] = []
    if len(tied) == len(ratio):
        u = _draw(rng, draws)
        arm = weighted_pick(ratio, u)
        preferred: str | None = None
        reason = "every arm balances equally; chosen at random by the allocation ratio"
    else:
        if len(tied) > 1:
            preferred = weighted_pick({a: ratio[a] for a in tied}, _draw(rng, draws))
        else:
            preferred = tied[0]
        u = _draw(rng, draws)
        if Fraction(u) < p:
            arm = preferred
            reason = f"preferred arm (lowest imbalance) taken: draw {u:.6f} < p {float(p):g}"
        else:
            others = {a: ratio[a] for a in ratio if a != preferred}
            rescaled = (Fraction(u) - p) / (1 - p)
            arm = weighted_pick(others, float(rescaled))
            reason = f"random element: draw {u:.6f} >= p {float(p):g}, another arm chosen by ratio"
        if len(tied) > 1:
            reason += f"; tie among {', '.join(tied)} broken at random"

    return MinimizationDecision(
        arm=arm,
        preferred_arm=preferred,
        imbalance_by_arm={a: float(s) for a, s in scores.items()},
        imbalance_by_factor={a: {f: float(v) for f, v in d.items()} for a, d in detail.items()},
        tied_arms=tied,
        random_draw=draws[-1],
        draws=tuple(draws),
        preferred_probability=float(p),
        measure=imbalance,
        reason=reason,
    )
