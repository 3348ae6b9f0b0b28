"""One item's answer on a generated form: its choices and units, the typed value a posted answer
gives, and a stored value shown as an answer again.

Shared by the screening form (screening_form.py) and the visit forms (visit_form.py): the same item
type is asked, read and refused with the same words on both, whatever record the answers become.
Pure translation: limits and edit checks are the services' and core's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cmvtrial.adapters.web.rendering import display_unit
from cmvtrial.core.protocol import Item

UNIT_SUFFIX = "__unit"


@dataclass(frozen=True)
class Choice:
    code: str
    label: str


class Answerable(Protocol):
    """What parsing needs of a form field: its item type, the units and the options it offers."""

    @property
    def kind(self) -> str: ...

    @property
    def units(self) -> tuple[Choice, ...]: ...

    @property
    def choices(self) -> tuple[Choice, ...]: ...


def item_choices(item: Item, codelists: Mapping[str, Any]) -> tuple[Choice, ...]:
    """The options of a coded item, from its codelist."""
    if item.codelist is None or item.codelist not in codelists:
        return ()
    return tuple(Choice(entry.code, entry.label) for entry in codelists[item.codelist].items)


def item_units(item: Item, *, alternatives: bool = True) -> tuple[Choice, ...]:
    """The units a quantity may be entered in: its own first, then (unless ``alternatives`` is off)
    the alternative units the protocol accepts."""
    if item.type != "quantity" or item.unit is None:
        return ()
    codes: Iterable[str] = [item.unit, *(alt.unit for alt in item.alternative_units)] if alternatives else [item.unit]
    return tuple(Choice(code, display_unit(code)) for code in codes)


def first_answer(form: Any, name: str) -> str:
    """The answer posted under ``name``, trimmed; "" when absent or not text (an uploaded file)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def parse_value(one: Answerable, raw: str, unit: str | None, *, whole_numbers: bool = False) -> Any:
    """The typed value of a non-blank answer, or ValueError with the message shown beside the field.

    A quantity with a unit becomes ``{"value", "unit"}``; without one (a group member) the bare
    number in the item's unit. ``whole_numbers`` keeps "60" an int rather than 60.0.
    """
    if one.kind == "quantity":
        number = parse_number(raw, whole_numbers=whole_numbers)
        if not one.units or unit is None:
            return number
        if unit not in {choice.code for choice in one.units}:
            raise ValueError(f"choose one of the units offered ({', '.join(c.label for c in one.units)})")
        return {"value": number, "unit": unit}
    if one.kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"'{raw}' is not a whole number") from None
    if one.kind == "boolean":
        if raw not in ("yes", "no"):
            raise ValueError("answer yes or no")
        return raw == "yes"
    if one.kind == "code" and one.choices and raw not in {choice.code for choice in one.choices}:
        raise ValueError("choose one of the options offered")
    return raw


def parse_number(raw: str, *, whole_numbers: bool = False) -> float | int:
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"'{raw}' is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"'{raw}' is not a number")
    if whole_numbers and number.is_integer() and "." not in raw and "e" not in raw.lower():
        return int(number)
    return number


def shown(value: Any) -> str:
    """A stored value as the form shows it: yes/no, 60 rather than 60.0, blank for none."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def plain_number(value: float | None) -> str:
    """10,000,000 rather than 1e+07: people read limits, not floats."""
    return f"{value:,.10g}" if value is not None else ""
