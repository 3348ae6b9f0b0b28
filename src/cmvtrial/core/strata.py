"""A subject's level of each stratification or minimization factor, judged from the screening data.

Why a separate rule: the level decides which list (stratum) or which margins (minimization) a
subject's allocation comes from, so it must be judged on exactly the values eligibility saw
(``eligibility.expression_values``) and never guessed. A factor is one of three kinds
(``protocol.Randomization``, checked by ``protocol_checks``):

- ``site``: the level is the code of the subject's site;
- a factor with ``levels``: the first level whose expression is true; the levels are tried in the
  protocol's order and an unknown expression before a true one makes the level unknown (a later
  level cannot be trusted while an earlier one might have applied);
- a code or boolean item without levels: its value is the level (booleans as ``yes``/``no``).

A factor whose level is unknown is listed in ``missing`` with the inputs it lacked: allocation is
refused until they are entered (reference/standards.md §5.3 RZ-03, "a stratum value missing").
Pure: the factors, the site code and the values go in; levels come out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cmvtrial.core.expressions import compile_expression
from cmvtrial.core.protocol import Factor

#: The factor that needs no item: allocation lists are kept per site (as in protocol_checks).
SITE = "site"


@dataclass(frozen=True)
class FactorLevels:
    """Levels by factor name; ``missing`` maps a factor without a level to the names it lacked."""

    levels: dict[str, str]
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing


def factor_levels(factors: Sequence[Factor], *, site: str, values: Mapping[str, object]) -> FactorLevels:
    """The level of each factor for a subject of ``site`` whose screening values are ``values``."""
    levels: dict[str, str] = {}
    missing: dict[str, tuple[str, ...]] = {}
    for factor in factors:
        if factor.name == SITE:
            levels[factor.name] = site
            continue
        if factor.levels:
            level, lacking = _first_true_level(factor, values)
        else:
            level, lacking = _value_level(factor.name, values)
        if level is None:
            missing[factor.name] = lacking
        else:
            levels[factor.name] = level
    return FactorLevels(levels, missing)


def _first_true_level(factor: Factor, values: Mapping[str, object]) -> tuple[str | None, tuple[str, ...]]:
    for level in factor.levels:
        if level.expression is None:
            return level.code, ()  # a level without a condition catches everyone left
        outcome = compile_expression(level.expression).evaluate(values)
        if outcome.value is None:
            return None, tuple(sorted(outcome.missing))
        if bool(outcome.value):
            return level.code, ()
    return None, (factor.name,)


def _value_level(name: str, values: Mapping[str, object]) -> tuple[str | None, tuple[str, ...]]:
    value = values.get(name)
    if value is None:
        return None, (name,)
    if isinstance(value, bool):
        return ("yes" if value else "no"), ()
    return str(value), ()
