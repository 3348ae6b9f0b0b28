"""Forms, items, codelists and edit checks of a protocol: data capture described as data.

Why like CDISC ODM (DESIGN.md §2): visits hold forms, forms hold items; an item knows its type, its
unit and the units it accepts, its hard and soft limits, its codelist, LOINC and SDTM codes. One
generic engine then serves every protocol, and exports stay faithful.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveFloat, StringConstraints, model_validator

from cmvtrial.core import units
from cmvtrial.core.protocol_fields import Code, ExpressionText, Identifier, ItemType, Loinc, Text, Unit, _Model

__all__ = ["AlternativeUnit", "Codelist", "CodelistEntry", "EditCheck", "Form", "Item", "Limits", "Sdtm"]

class Limits(_Model):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


def _factor_from_divisor(data: Any) -> Any:
    if isinstance(data, dict) and data.get("factor") is None:
        divisor = data.get("divisor")
        if isinstance(divisor, (int, float)) and not isinstance(divisor, bool) and divisor > 0:
            return {**data, "factor": 1.0 / divisor}
    return data


class AlternativeUnit(_Model):
    """A unit accepted for an item across dimensions: value_in_primary = value × factor
    (or value / divisor, exact when the source states a divisor such as creatinine's 88.4)."""

    unit: Unit
    factor: PositiveFloat
    divisor: PositiveFloat | None = None
    source: str | None = None

    _fill = model_validator(mode="before")(_factor_from_divisor)

    @model_validator(mode="after")
    def _agree(self) -> AlternativeUnit:
        if self.divisor is not None and abs(self.factor * self.divisor - 1) > 1e-9:
            raise ValueError(f"factor {self.factor} and divisor {self.divisor} disagree")
        return self

    def to_primary(self, value: float) -> float:
        return value / self.divisor if self.divisor is not None else value * self.factor


class Sdtm(_Model):
    domain: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    testcd: Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,7}$")] | None = None
    variable: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9]{0,7}$")] | None = None


class Item(_Model):
    """One item of a form. ``computed`` makes its value an expression over the form's other items
    (the SLEDAI-2K total from its weighted descriptors): computed whenever every input is given, and
    an entered value must then agree; entered as is while an input is missing."""

    id: Identifier
    label: str | None = None
    type: ItemType
    unit: Unit | None = None
    alternative_units: tuple[AlternativeUnit, ...] = ()
    hard_limits: Limits | None = None
    soft_limits: Limits | None = None
    required: bool = False
    codelist: Identifier | None = None
    loinc: Loinc | None = None
    sdtm: Sdtm | None = None
    items: tuple[Item, ...] = ()
    description: str | None = None
    computed: ExpressionText | None = None

    @property
    def display_label(self) -> str:
        return self.label or self.id

    @model_validator(mode="after")
    def _fits_type(self) -> Item:
        kind = self.type
        if kind == "quantity" and self.unit is None:
            raise ValueError(f"quantity item '{self.id}' needs a unit")
        if kind != "quantity" and (self.unit is not None or self.alternative_units):
            raise ValueError(f"only quantity items have units ('{self.id}' is {kind})")
        if kind not in ("quantity", "integer") and (self.hard_limits or self.soft_limits):
            raise ValueError(f"only quantity and integer items have limits ('{self.id}' is {kind})")
        if (kind in ("code", "code_list")) != (self.codelist is not None):
            raise ValueError(f"code and code_list items, and only they, name a codelist ('{self.id}')")
        if (kind == "group") != bool(self.items):
            raise ValueError(f"group items, and only they, hold items ('{self.id}')")
        if any(child.type == "group" for child in self.items):
            raise ValueError(f"groups do not nest ('{self.id}')")
        if self.computed is not None and kind not in ("quantity", "integer"):
            raise ValueError(f"only quantity and integer items are computed ('{self.id}' is {kind})")
        hard, soft = self.hard_limits, self.soft_limits
        if hard and soft:
            if hard.min is not None and soft.min is not None and soft.min < hard.min:
                raise ValueError(f"soft min {soft.min} is below hard min {hard.min}")
            if hard.max is not None and soft.max is not None and soft.max > hard.max:
                raise ValueError(f"soft max {soft.max} is above hard max {hard.max}")
        for alternative in self.alternative_units:
            if alternative.unit == self.unit:
                raise ValueError(f"alternative unit {alternative.unit} is the item's own unit")
            if units.are_compatible(alternative.unit, self.unit or ""):
                raise ValueError(
                    f"alternative unit {alternative.unit} converts to {self.unit} by its dimension; "
                    "drop it (units of the same dimension are accepted without a factor)"
                )
        return self

    def walk(self, prefix: str = "") -> Iterator[tuple[str, Item]]:
        """This item and its children as (dotted path, item)."""
        path = f"{prefix}{self.id}"
        yield path, self
        for child in self.items:
            yield from child.walk(path + ".")


class Form(_Model):
    id: Identifier
    name: Text
    description: str | None = None
    repeating: bool = False
    items: tuple[Item, ...] = Field(min_length=1)

    def item_paths(self) -> Mapping[str, Item]:
        """Every item by dotted path (``corticosteroid.drug`` for an item in a group); read-only,
        built once per form (every entry of a form asks for it several times)."""
        return self._item_paths

    @cached_property
    def _item_paths(self) -> Mapping[str, Item]:
        return MappingProxyType({path: item for top in self.items for path, item in top.walk()})


class CodelistEntry(_Model):
    code: Code
    label: Text


class Codelist(_Model):
    id: Identifier
    name: str | None = None
    items: tuple[CodelistEntry, ...] = Field(min_length=1)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(entry.code for entry in self.items)


class EditCheck(_Model):
    """The expression states what must hold; the check fires when it is false (never when unknown)."""

    id: Code
    form: Identifier
    expression: ExpressionText
    message: Text
    severity: Literal["hard", "soft"]
    items: tuple[str, ...] = ()
