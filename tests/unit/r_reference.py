"""Reading the R reference fixtures under tests/reference/ (see each folder's make_reference.R)."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
TOLERANCE = 1e-6


@cache
def load(folder: str) -> dict[str, Any]:
    """The reference.json written by ``tests/reference/<folder>/make_reference.R``."""
    with (REFERENCE / folder / "reference.json").open(encoding="utf-8") as handle:
        return json.load(handle)


def table(folder: str, name: str) -> pd.DataFrame:
    """A dataset the R script wrote (and computed its reference values on)."""
    return pd.read_csv(REFERENCE / folder / name)


def _flatten(values: Any) -> list[Any]:
    if isinstance(values, (list, tuple, np.ndarray)):
        return [item for value in values for item in _flatten(value)]
    return [values]


def as_floats(values: Any) -> np.ndarray:
    """R values as floats, flattened: null -> NaN, "Inf" -> inf; a scalar becomes one element."""
    converted = []
    for value in _flatten(values):
        if value is None:
            converted.append(math.nan)
        elif value in ("Inf", "-Inf"):
            converted.append(math.inf if value == "Inf" else -math.inf)
        else:
            converted.append(float(value))
    return np.asarray(converted, dtype=float)


def assert_close(actual: Any, expected: Any, *, rel: float = TOLERANCE, abs_: float = 0.0, what: str = "") -> None:
    """Equal to R within ``rel`` (relative) or ``abs_``; NaN/None (not estimable) must match too."""
    got, want = as_floats(actual), as_floats(expected)
    assert got.shape == want.shape, f"{what}: {got.shape} values, R has {want.shape}"
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: not-estimable entries differ: {got} vs R {want}"
    finite = np.isfinite(want)
    assert np.array_equal(np.isinf(got), np.isinf(want)), f"{what}: infinite entries differ"
    np.testing.assert_allclose(got[finite], want[finite], rtol=rel, atol=abs_, err_msg=what)
