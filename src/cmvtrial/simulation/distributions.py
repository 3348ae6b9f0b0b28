"""The numbers of a scenario: fixed values and distributions, each with its source, and how they are drawn.

Why here and not in the scenario model: every consumer (kinetics, cohorts, adverse events, the demo
trial) draws the same way, from an ``rng`` passed in. ``normal`` and ``lognormal`` may be truncated
(``low``/``high``, on the natural scale): out-of-range draws are redrawn when most of the mass is
inside, otherwise the CDF is inverted — both exact and vectorized.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from scipy import special

ASSUMPTION = "ASSUMPTION"

#: Where a number comes from: a citation (``domain.md §4.3 …``, ``seed 000 …``) or ASSUMPTION.
Source = Annotated[str, StringConstraints(min_length=3, strip_whitespace=True)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Value(_Model):
    """A fixed number."""

    value: float
    source: Source


class PositiveValue(Value):
    value: float = Field(gt=0)


class Probability(_Model):
    value: float = Field(ge=0, le=1)
    source: Source


def _outside(draws: NDArray, low: float, high: float) -> NDArray[np.bool_]:
    """Draws below ``low`` or above ``high`` (an infinite bound is not compared)."""
    if low == -np.inf:
        return draws > high
    if high == np.inf:
        return draws < low
    return (draws < low) | (draws > high)


def _truncated_standard_normal(rng: np.random.Generator, size: Any, low: float, high: float) -> NDArray:
    """Standard normal draws restricted to [low, high] (z scale).

    When most of the mass is inside, out-of-range draws are simply redrawn (cheap and exact);
    a narrow or far-out window is sampled by inverting the CDF instead.
    """
    if low == -np.inf and high == np.inf:
        return rng.standard_normal(size)
    lower, upper = special.ndtr(low), special.ndtr(high)
    if upper - lower >= 0.5:
        draws = rng.standard_normal(size)
        outside = np.flatnonzero(_outside(draws, low, high))
        flat = draws.reshape(-1)
        while outside.size:
            redraw = rng.standard_normal(outside.size)
            flat[outside] = redraw
            outside = outside[_outside(redraw, low, high)]
        return draws
    u = lower + rng.random(size) * (upper - lower)
    return special.ndtri(np.clip(u, 1e-300, 1 - 1e-16))


class _Distribution(_Model):
    source: Source

    def sample(self, rng: np.random.Generator, size: Any) -> NDArray[np.float64]:  # pragma: no cover
        raise NotImplementedError


class _Truncatable(_Distribution):
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _bounds_ordered(self) -> _Truncatable:
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        return self


class Normal(_Truncatable):
    dist: Literal["normal"]
    mean: float
    sd: float = Field(ge=0)

    def sample(self, rng: np.random.Generator, size: Any) -> NDArray[np.float64]:
        if self.sd == 0:
            return np.clip(np.full(size, self.mean), self.low, self.high)
        low = -np.inf if self.low is None else (self.low - self.mean) / self.sd
        high = np.inf if self.high is None else (self.high - self.mean) / self.sd
        draws = _truncated_standard_normal(rng, size, low, high)
        draws *= self.sd
        draws += self.mean
        return draws


class LogNormal(_Truncatable):
    """log(X) ~ Normal(log(median), sigma); ``low``/``high`` bound X itself."""

    dist: Literal["lognormal"]
    median: float = Field(gt=0)
    sigma: float = Field(ge=0)

    @model_validator(mode="after")
    def _positive_bounds(self) -> LogNormal:
        if self.low is not None and self.low < 0:
            raise ValueError("a lognormal quantity cannot have a negative lower bound")
        return self

    def sample(self, rng: np.random.Generator, size: Any) -> NDArray[np.float64]:
        if self.sigma == 0:
            return np.clip(np.full(size, self.median), self.low, self.high)
        mu = np.log(self.median)
        low = -np.inf if not self.low else (np.log(self.low) - mu) / self.sigma
        high = np.inf if self.high is None else (np.log(self.high) - mu) / self.sigma
        draws = _truncated_standard_normal(rng, size, low, high)
        draws *= self.sigma
        draws += mu
        return np.exp(draws, out=draws)


class LogitNormal(_Distribution):
    """logit(X) ~ Normal(logit(median), sigma): a proportion that varies between patients."""

    dist: Literal["logitnormal"]
    median: float = Field(gt=0, lt=1)
    sigma: float = Field(ge=0)

    def sample(self, rng: np.random.Generator, size: Any) -> NDArray[np.float64]:
        centre = np.log(self.median / (1 - self.median))
        draws = rng.standard_normal(size)
        draws *= self.sigma
        draws += centre
        return special.expit(draws, out=draws)


class Uniform(_Distribution):
    dist: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        return self

    def sample(self, rng: np.random.Generator, size: Any) -> NDArray[np.float64]:
        draws = rng.random(size)
        draws *= self.high - self.low
        draws += self.low
        return draws


class Gamma(_Distribution):
    """Parameterised by mean and standard deviation (shape = (mean/sd)², scale = sd²/mean)."""

    dist: Literal["gamma"]
    mean: float = Field(gt=0)
    sd: float = Field(gt=0)

    def sample(self, rng: np.random.Generator, size: Any) -> NDArray[np.float64]:
        shape = (self.mean / self.sd) ** 2
        return rng.gamma(shape, self.sd**2 / self.mean, size)


class Constant(_Distribution):
    dist: Literal["constant"]
    value: float

    def sample(self, rng: np.random.Generator, size: Any) -> NDArray[np.float64]:
        return np.full(size, self.value, dtype=np.float64)


Distribution = Annotated[
    Normal | LogNormal | LogitNormal | Uniform | Gamma | Constant, Field(discriminator="dist")
]


class Categorical(_Model):
    """A choice among labels with probabilities that sum to 1."""

    probabilities: dict[str, float] = Field(min_length=1)
    source: Source

    @model_validator(mode="after")
    def _sums_to_one(self) -> Categorical:
        if any(p < 0 for p in self.probabilities.values()):
            raise ValueError("probabilities cannot be negative")
        total = sum(self.probabilities.values())
        if abs(total - 1) > 1e-6:
            raise ValueError(f"probabilities sum to {total:g}, not 1")
        return self

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.probabilities)

    def sample_index(self, rng: np.random.Generator, size: Any) -> NDArray[np.intp]:
        cumulative = np.cumsum(list(self.probabilities.values()))
        cumulative[-1] = 1.0
        return np.searchsorted(cumulative, rng.random(size), side="right").astype(np.intp)

    def sample(self, rng: np.random.Generator, size: Any) -> NDArray[np.str_]:
        return np.asarray(self.labels)[self.sample_index(rng, size)]
