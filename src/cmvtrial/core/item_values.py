"""One item's answer checked against its definition in the protocol: parsed, converted to the
item's primary unit, held to its hard limits, and kept both as entered and normalized.

Why apart from the form (:mod:`cmvtrial.core.form_entry`): the rules for one value — its type, its
codelist, the units it accepts (its own, an ``alternative_units`` entry with the protocol's factor,
or any unit of the same dimension by pint), its hard and soft limits — are used by the whole-form
check, by the dose calculation and by imports that bring a single value (a FHIR lab result). A
value outside a hard limit is a problem naming the item (``ItemProblem``, collected by the form
check into one ``InvalidInput``); outside a soft limit it is a ``Finding`` the service turns into a
query. ``{"missing_reason": "..."}`` answers an item without a value.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

from cmvtrial.core import units
from cmvtrial.core.units import clean_number
from cmvtrial.errors import InvalidInput, OutOfRange, UnitError

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Item

_NUMBER_WITH_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")
_TRUE, _FALSE = {"true", "yes", "y", "1"}, {"false", "no", "n", "0"}


# ------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class EnteredValue:
    """One item's value: as entered (``entered``, ``entered_unit``) and normalized (``value`` in the
    item's primary ``unit``; a ``date`` for dates, a tuple of codes for a code list)."""

    path: str
    type: str
    entered: object
    entered_unit: str | None
    value: object
    unit: str | None
    missing_reason: str | None = None

    def storage(self) -> dict[str, object]:
        """The columns of the store's item value (``store.tables.ItemValue``), ready to write."""
        number = self.value if self.type in ("quantity", "integer") else None
        text = None if number is not None or self.value is None else _as_text(self.value)
        return {
            "item_id": self.path,
            "value_type": self.type,
            "entered_value": None if self.entered is None else _as_text(self.entered),
            "entered_unit": self.entered_unit,
            "normalized_number": number,
            "normalized_text": text,
            "normalized_unit": self.unit,
            "missing_reason": self.missing_reason,
        }

    def as_submission(self) -> object:
        """What to submit again to reproduce this value (e.g. to re-check a whole form)."""
        if self.missing_reason is not None:
            return {"missing_reason": self.missing_reason}
        if self.type == "quantity":
            return {"value": self.entered, "unit": self.entered_unit}
        if isinstance(self.entered, (date, datetime)):
            return self.entered.isoformat()
        return list(self.entered) if isinstance(self.entered, tuple) else self.entered


@dataclass(frozen=True)
class Finding:
    """Something that deserves a query but may be right: a soft limit or a soft edit check."""

    kind: Literal["soft_limit", "edit_check"]
    items: tuple[str, ...]
    message: str
    check_id: str | None = None
    values: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "check_id": self.check_id,
            "items": list(self.items),
            "message": self.message,
            "values": {k: plain_value(v) for k, v in self.values.items()},
        }


def plain_value(value: object) -> object:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value))
    return str(value)


def parse_amount(text: str, field: str) -> tuple[float, str | None]:
    """``"0.5 10^9/L"`` -> (0.5, "10^9/L"); ``"70"`` -> (70.0, None). InvalidInput naming ``field``
    when the text does not start with a number (the unit, if any, is checked by the caller)."""
    match = _NUMBER_WITH_UNIT.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(f"{field} must be a number, optionally followed by a unit (got {text!r})",
                           field=field, value=text)
    return float(match.group(1)), match.group(2) or None


# ------------------------------------------------------------------------------------------------
# Units


def to_primary_unit(item: Item, value: float, unit: str | None, *, path: str | None = None) -> tuple[float, str]:
    """``value`` in ``unit`` expressed in the item's primary unit, and the entered unit's UCUM code.

    Accepted: the item's own unit (or no unit), one of its ``alternative_units`` (the protocol's
    factor, with pint on the near side: µmol/L → mmol/L is fine when µmol/L is the alternative), or
    any unit of the primary unit's dimension (pint). Anything else is a UnitError naming the item.
    """
    name = path or item.id
    primary = item.unit
    if primary is None:
        raise InvalidInput(f"{name} is not a quantity and takes no unit", field=name)
    if unit is None or (isinstance(unit, str) and not unit.strip()):
        return clean_number(float(value)), primary
    try:
        code = units.canonical_unit(unit)
    except UnitError:
        raise UnitError(f"{name}: unknown unit '{unit}'; {_accepted(item)}", field=name, value=unit) from None
    if units.are_compatible(code, primary):
        return clean_number(units.convert(value, code, primary)), code
    for alternative in item.alternative_units:
        if units.are_compatible(code, alternative.unit):
            return clean_number(alternative.to_primary(units.convert(value, code, alternative.unit))), code
    raise UnitError(f"{name} cannot be given in {code}; {_accepted(item)}", field=name, value=unit)


def _accepted(item: Item) -> str:
    others = [alternative.unit for alternative in item.alternative_units]
    listed = " or ".join([str(item.unit), *others])
    return f"it accepts {listed} (or a unit of the same dimension as {item.unit})"


# ------------------------------------------------------------------------------------------------
# Parsing one value


class ItemProblem(Exception):
    """A value refused, naming its item; ``family`` is the error the form check raises for it."""

    def __init__(self, path: str, message: str, family: type[InvalidInput] = InvalidInput, **details: Any):
        super().__init__(message)
        self.path, self.message, self.family, self.details = path, message, family, details


def _number(raw: object, path: str) -> int | float:
    """The number as given (an int stays an int, so the entered value is kept exactly)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ItemProblem(path, f"{path} must be a number, not {raw!r}")
    if not math.isfinite(raw):
        raise ItemProblem(path, f"{path} must be a finite number")
    return raw


def _split_quantity(raw: object, path: str) -> tuple[int | float, str | None]:
    """(number, unit text or None) of a number, ``{"value", "unit"}`` or text like ``"88 umol/L"``."""
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"value", "unit"}
        if unknown or "value" not in raw:
            raise ItemProblem(path, f'{path} must be a number or {{"value": number, "unit": text}}')
        unit = raw.get("unit")
        if unit is not None and not isinstance(unit, str):
            raise ItemProblem(path, f"{path}: the unit must be text", UnitError)
        return _number(raw["value"], path), unit
    if isinstance(raw, str):
        match = _NUMBER_WITH_UNIT.match(raw)
        if match is None:
            raise ItemProblem(path, f"{path} must be a number (optionally followed by a unit), not {raw!r}")
        return float(match.group(1)), match.group(2) or None
    return _number(raw, path), None


def check_hard_limits(item: Item, path: str, number: float, shown: str) -> None:
    limits = item.hard_limits
    if limits is None:
        return
    unit = f" {item.unit}" if item.unit else ""
    if limits.min is not None and number < limits.min:
        raise ItemProblem(path, f"{path} {shown} is below the hard limit {limits.min:g}{unit}", OutOfRange,
                       value=number, limit=limits.min)
    if limits.max is not None and number > limits.max:
        raise ItemProblem(path, f"{path} {shown} is above the hard limit {limits.max:g}{unit}", OutOfRange,
                       value=number, limit=limits.max)


def soft_limit_finding(item: Item, path: str, number: float) -> Finding | None:
    limits = item.soft_limits
    if limits is None:
        return None
    unit = f" {item.unit}" if item.unit else ""
    if limits.min is not None and number < limits.min:
        side, limit = "below", limits.min
    elif limits.max is not None and number > limits.max:
        side, limit = "above", limits.max
    else:
        return None
    return Finding("soft_limit", (path,), f"{path} {number:g}{unit} is {side} the expected limit {limit:g}{unit}; "
                   "please confirm or correct", values={path: number})


def parse_item_value(item: Item, path: str, raw: object, codelists: Mapping[str, tuple[str, ...]]) -> EnteredValue:
    kind = item.type
    if kind == "quantity":
        number, unit = _split_quantity(raw, path)
        value, entered_unit = to_primary_unit(item, float(number), unit, path=path)
        shown = f"{number:g} {entered_unit}" + (f" (= {value:g} {item.unit})" if entered_unit != item.unit else "")
        check_hard_limits(item, path, value, shown)
        return EnteredValue(path, kind, number, entered_unit, value, item.unit)
    if kind == "integer":
        number = float(raw) if isinstance(raw, str) and re.fullmatch(r"\s*[-+]?\d+\s*", raw) else raw
        number = float(_number(number, path))
        if not number.is_integer():
            raise ItemProblem(path, f"{path} must be a whole number, not {number:g}")
        check_hard_limits(item, path, number, f"{int(number)}")
        return EnteredValue(path, kind, int(number), None, int(number), None)
    if kind == "text":
        if not isinstance(raw, str):
            raise ItemProblem(path, f"{path} must be text")
        return EnteredValue(path, kind, raw, None, raw.strip(), None)
    if kind == "date":
        return _date_value(path, raw)
    if kind == "datetime":
        return _datetime_value(path, raw)
    if kind == "boolean":
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            raw = raw.strip().lower() in _TRUE
        if not isinstance(raw, bool):
            raise ItemProblem(path, f"{path} must be true or false")
        return EnteredValue(path, kind, raw, None, raw, None)
    if kind == "code":
        return EnteredValue(path, kind, raw, None, _code(path, raw, codelists[item.codelist or ""]), None)
    if kind == "code_list":
        if isinstance(raw, str) or not isinstance(raw, Sequence):
            raise ItemProblem(path, f"{path} must be a list of codes (empty for none)")
        codes = tuple(_code(path, entry, codelists[item.codelist or ""]) for entry in raw)
        if len(set(codes)) != len(codes):
            raise ItemProblem(path, f"{path} lists a code more than once")
        return EnteredValue(path, kind, codes, None, codes, None)
    raise ItemProblem(path, f"{path} has type {kind}, which holds no value of its own")  # pragma: no cover


def _date_value(path: str, raw: object) -> EnteredValue:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return EnteredValue(path, "date", raw, None, raw, None)
    if isinstance(raw, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw.strip()):
        try:
            parsed = date.fromisoformat(raw.strip())
        except ValueError:
            raise ItemProblem(path, f"{path}: '{raw}' is not a calendar date") from None
        return EnteredValue(path, "date", raw.strip(), None, parsed, None)
    raise ItemProblem(path, f"{path} must be a date YYYY-MM-DD")


def _datetime_value(path: str, raw: object) -> EnteredValue:
    if isinstance(raw, datetime):
        return EnteredValue(path, "datetime", raw, None, raw, None)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            parsed = None
        if parsed is not None and "T" in raw.upper():
            return EnteredValue(path, "datetime", raw.strip(), None, parsed, None)
    raise ItemProblem(path, f"{path} must be a date and time YYYY-MM-DDTHH:MM[:SS][+HH:MM]")


def _code(path: str, raw: object, codes: tuple[str, ...]) -> str:
    if not isinstance(raw, str):
        raise ItemProblem(path, f"{path} must be one of the codes {', '.join(codes)}")
    if raw not in codes:
        close = [code for code in codes if code.casefold() == raw.casefold()] or difflib.get_close_matches(raw, codes, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ItemProblem(path, f"{path}: '{raw}' is not one of the codes {', '.join(codes)}{hint}")
    return raw


def missing_reason(raw: object) -> str | None:
    if isinstance(raw, Mapping) and set(raw) == {"missing_reason"}:
        reason = raw["missing_reason"]
        if isinstance(reason, str) and reason.strip():
            return reason.strip()
    return None
