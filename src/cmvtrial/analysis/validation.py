"""Checks on the tables handed to the statistics, so that bad data fails with a named reason.

Why a module of its own: every analysis takes plain columns (times, 0/1 events, arm labels,
values) that may come from a CSV typed by hand, and each must refuse the same mistakes the same
way — a missing column, text where a number belongs, a negative time, an event coded 1/2, a single
arm — with an ``InvalidInput`` that names the column and the offending value, before any library
sees the data and fails with a traceback. Nothing here changes the data; it only converts it to
arrays after checking it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cmvtrial.errors import InvalidInput


def require_columns(frame: pd.DataFrame, columns: Sequence[str | None]) -> None:
    """Every named column exists in ``frame`` (``None`` entries are options not used)."""
    missing = [name for name in columns if name is not None and name not in frame.columns]
    if missing:
        raise InvalidInput(
            f"column {missing[0]!r} is not in the table (columns: {', '.join(map(str, frame.columns))})",
            field=missing[0],
        )


def numeric_column(values: Any, name: str, *, allow_missing: bool = False) -> np.ndarray:
    """``values`` as float64, refusing text, infinities and (unless allowed) missing values."""
    series = pd.Series(values, copy=False)
    if series.dtype == bool:
        series = series.astype(float)
    converted = pd.to_numeric(series, errors="coerce")
    bad_text = converted.isna() & series.notna()
    if bad_text.any():
        row = int(np.flatnonzero(bad_text.to_numpy())[0])
        raise InvalidInput(
            f"{name} must be numeric; row {row + 1} holds {series.iloc[row]!r}", field=name, row=row + 1
        )
    array = converted.to_numpy(dtype=float)
    if not allow_missing and np.isnan(array).any():
        row = int(np.flatnonzero(np.isnan(array))[0])
        raise InvalidInput(f"{name} is missing in row {row + 1}", field=name, row=row + 1)
    if np.isinf(array).any():
        row = int(np.flatnonzero(np.isinf(array))[0])
        raise InvalidInput(f"{name} is infinite in row {row + 1}", field=name, row=row + 1)
    return array


def times_column(values: Any, name: str = "time") -> np.ndarray:
    """Follow-up times: numeric, present and not negative."""
    array = numeric_column(values, name)
    if (array < 0).any():
        row = int(np.flatnonzero(array < 0)[0])
        raise InvalidInput(
            f"{name} must not be negative; row {row + 1} holds {array[row]:g}", field=name, row=row + 1
        )
    return array


def event_column(values: Any, name: str = "event") -> np.ndarray:
    """Event indicators coded 0 (censored) or 1 (event), as R's ``Surv(time, event)`` with 0/1."""
    array = numeric_column(values, name)
    bad = (array != 0) & (array != 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InvalidInput(
            f"{name} must be 0 (censored) or 1 (event); row {row + 1} holds {array[row]:g}",
            field=name,
            row=row + 1,
        )
    return array.astype(np.int64)


def label_column(values: Any, name: str) -> np.ndarray:
    """Group labels (arm, stratum) as strings; a missing label is refused, not silently dropped."""
    series = pd.Series(values, copy=False)
    if series.isna().any():
        row = int(np.flatnonzero(series.isna().to_numpy())[0])
        raise InvalidInput(f"{name} is missing in row {row + 1}", field=name, row=row + 1)
    return series.astype(str).to_numpy(dtype=object)


def same_length(**columns: Sequence[Any] | np.ndarray | None) -> int:
    """All given columns have one length; returns it."""
    lengths = {name: len(values) for name, values in columns.items() if values is not None}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise InvalidInput(f"columns differ in length ({described})", lengths=lengths)
    length = next(iter(lengths.values()), 0)
    if length == 0:
        raise InvalidInput("the table has no rows", field=next(iter(lengths), None))
    return length


def arm_levels(arm: np.ndarray, reference: str | None, name: str = "arm") -> tuple[str, ...]:
    """The arms, reference first, then the others in sorted order; at least two are needed.

    The reference is explicit because R and patsy order factor levels differently (statistics.md
    item 6); without one, the first label in sorted order is the reference, as R's default for a
    character column in the C locale.
    """
    levels = sorted(set(arm.tolist()))
    if len(levels) < 2:
        only = levels[0] if levels else "nothing"
        raise InvalidInput(f"{name} has a single value ({only!r}); a comparison needs two arms", field=name)
    if reference is None:
        reference = levels[0]
    if reference not in levels:
        raise InvalidInput(
            f"reference {reference!r} is not a value of {name} (values: {', '.join(levels)})",
            field=name,
            value=reference,
        )
    return (reference, *[level for level in levels if level != reference])


def confidence_level(level: float) -> float:
    """A confidence level strictly between 0 and 1."""
    if not 0.0 < float(level) < 1.0:
        raise InvalidInput(f"confidence level must be between 0 and 1, not {level}", field="conf_level")
    return float(level)


def finite_or_none(value: float | None) -> float | None:
    """JSON-friendly: NaN or infinity (not estimable, not reached) becomes ``None``."""
    return None if value is None or not np.isfinite(value) else float(value)
