"""The screening record as item values of the protocol's screening form, and back.

Why: the system keeps screening data like every other form (DESIGN.md §2 "Forms like CDISC ODM"):
one item value per record key under the screening visit, with what was entered (value and unit)
next to the value normalized to the item's unit. The public JSON of docs/screening-record.md is the
way in, so this module turns a validated record into those item values and a stored set of item
values back into the record, exactly: ``record_data(screening_items(...))`` gives the keys that went
in, so eligibility can be judged again from the store on every change.

How each key is kept (``value_type``; ``entered_value`` is text, as ODM keeps it):

- quantities (``cmv_dna``, ``serum_creatinine``, ``alt``, ...): the number as entered (JSON text)
  and its unit as a UCUM code, normalized to the item's unit (pint, or the protocol's
  ``alternative_units``); ``weight_kg`` and a ULN may be a bare number. A bare ULN takes its
  analyte's unit when the analyte is known (the record's rule) and is stored with that unit; with
  the analyte unknown it stays bare and has no normalized value yet;
- ``nyha_class`` an integer; codes and dates as text; booleans ``true``/``false``; code lists as
  JSON arrays (``[]`` is "none", kept);
- ``corticosteroid`` is a group: ``corticosteroid.drug`` and ``corticosteroid.daily_dose_mg``; the
  explicit "none" (``null`` in the record) is one value ``corticosteroid`` of type ``group`` with the
  normalized text ``none``.

A removed value is never deleted: its row is cleared (no entered value, no normalized value) so its
history, and any query or signature pointing at it, stays attached; ``record_data`` skips it.

Pure: the protocol, the record and the submitted keys go in; plain values come out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol as TypingProtocol

from cmvtrial.core.derived_values import convert_for_item
from cmvtrial.core.eligibility import derivation_parameters
from cmvtrial.core.protocol import Protocol
from cmvtrial.core.screening_record import Quantity, ScreeningRecord
from cmvtrial.core.units import clean_number

#: The group key whose ``null`` means "none" (docs/screening-record.md), and its stored marker.
CORTICOSTEROID = "corticosteroid"
NONE_TAKEN = "none"
#: A ULN given as a bare number is in the unit of this analyte.
ULN_OF: dict[str, str] = {"alt_uln": "alt", "ast_uln": "ast", "total_bilirubin_uln": "total_bilirubin"}


@dataclass(frozen=True)
class StoredItem:
    """One item value as the store keeps it (the columns of ``store.tables.ItemValue``)."""

    item_id: str
    value_type: str
    entered_value: str | None
    entered_unit: str | None = None
    normalized_number: float | None = None
    normalized_text: str | None = None
    normalized_unit: str | None = None

    def columns(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "value_type": self.value_type,
            "entered_value": self.entered_value,
            "entered_unit": self.entered_unit,
            "normalized_number": self.normalized_number,
            "normalized_text": self.normalized_text,
            "normalized_unit": self.normalized_unit,
        }


class StoredRow(TypingProtocol):
    """What ``record_data`` reads of a stored item value (a row of ``form_data`` will do)."""

    item_id: str
    value_type: str
    entered_value: str | None
    entered_unit: str | None
    normalized_text: str | None


def is_blank(row: StoredRow) -> bool:
    """A stored item value that was removed (cleared): it holds no value and says nothing."""
    return row.entered_value is None and row.normalized_text is None


def owns(key: str, item_id: str) -> bool:
    """Whether the stored item value ``item_id`` belongs to record key ``key`` (a group owns its items)."""
    return item_id == key or item_id.startswith(key + ".")


def _number_text(raw: object) -> str:
    return json.dumps(raw)


def _raw_number(raw: object) -> object:
    return raw.get("value") if isinstance(raw, Mapping) else raw


class _Normalizer:
    def __init__(self, protocol: Protocol) -> None:
        self.items = protocol.screening.item_paths()
        self.bridges = derivation_parameters(protocol).unit_bridges

    def quantity(self, key: str, raw: object, quantity: Quantity | None, fallback_unit: str | None) -> StoredItem:
        """``raw`` as entered; ``quantity`` the validated value with its unit (None: bare, unit unknown)."""
        entered = _number_text(_raw_number(raw))
        item = self.items.get(key)
        target = item.unit if item is not None and item.unit else None
        if quantity is None:
            return StoredItem(key, "quantity", entered, None, None, None, target or fallback_unit)
        if target is None:
            return StoredItem(key, "quantity", entered, quantity.unit, clean_number(quantity.value), None, quantity.unit)
        number = convert_for_item(key, quantity.value, quantity.unit, target, self.bridges)
        return StoredItem(key, "quantity", entered, quantity.unit, clean_number(number), None, target)


def screening_items(protocol: Protocol, record: ScreeningRecord, raw: Mapping[str, object]) -> dict[str, StoredItem]:
    """The item values of the submitted keys ``raw`` (the JSON as given), read from the validated
    ``record`` of the whole merged screening data. A key given ``null`` yields no item value, except
    ``corticosteroid`` (``null`` = none taken)."""
    normalizer = _Normalizer(protocol)
    stored: dict[str, StoredItem] = {}
    for key, given in raw.items():
        value = getattr(record, key)
        if key == CORTICOSTEROID:
            stored.update(_corticosteroid(normalizer, value, given))
            continue
        if value is None:
            continue
        if key == "weight_kg":
            unit = value_unit = None
            if isinstance(given, Mapping):
                unit = Quantity.model_validate(given).unit
                value_unit = unit
            stored[key] = StoredItem(key, "quantity", _number_text(_raw_number(given)), value_unit, clean_number(value), None, "kg")
        elif isinstance(value, Quantity):
            stored[key] = normalizer.quantity(key, given, value, value.unit)
        elif key in ULN_OF:
            analyte = getattr(record, ULN_OF[key])
            quantity = Quantity(value=value, unit=analyte.unit) if isinstance(analyte, Quantity) else None
            stored[key] = normalizer.quantity(key, given, quantity, None)
        elif isinstance(value, bool):
            text = "true" if value else "false"
            stored[key] = StoredItem(key, "boolean", text, normalized_text=text)
        elif isinstance(value, int):
            stored[key] = StoredItem(key, "integer", str(value), normalized_number=float(value))
        elif isinstance(value, date):
            stored[key] = StoredItem(key, "date", value.isoformat(), normalized_text=value.isoformat())
        elif isinstance(value, list):
            text = json.dumps(list(value))
            stored[key] = StoredItem(key, "code_list", text, normalized_text=text)
        else:
            stored[key] = StoredItem(key, "code", str(value), normalized_text=str(value))
    return stored


def _corticosteroid(normalizer: _Normalizer, value: object, given: object) -> dict[str, StoredItem]:
    if value is None:
        return {CORTICOSTEROID: StoredItem(CORTICOSTEROID, "group", "null", normalized_text=NONE_TAKEN)}
    stored: dict[str, StoredItem] = {}
    drug = getattr(value, "drug", None)
    dose = getattr(value, "daily_dose_mg", None)
    if drug is not None:
        path = f"{CORTICOSTEROID}.drug"
        stored[path] = StoredItem(path, "code", drug, normalized_text=drug)
    if dose is not None:
        path = f"{CORTICOSTEROID}.daily_dose_mg"
        raw_dose = given.get("daily_dose_mg") if isinstance(given, Mapping) else dose
        entered = normalizer.quantity(path, {"value": raw_dose}, Quantity(value=dose, unit="mg"), "mg")
        stored[path] = StoredItem(path, "quantity", entered.entered_value, None, entered.normalized_number, None,
                                  entered.normalized_unit)
    return stored


def record_data(rows: Iterable[StoredRow]) -> dict[str, object]:
    """The screening record (public JSON data) the stored item values say."""
    data: dict[str, object] = {}
    for row in sorted(rows, key=lambda r: r.item_id):
        if is_blank(row):
            continue
        key, _, child = row.item_id.partition(".")
        if row.value_type == "group":
            data[key] = None if row.normalized_text == NONE_TAKEN else data.get(key, {})
            continue
        value = _entered(row)
        if child:
            group = data.get(key)
            if not isinstance(group, dict):
                group = data[key] = {}
            group[child] = value
        else:
            data[key] = value
    return data


def _entered(row: StoredRow) -> object:
    text = row.entered_value
    if text is None:
        return None
    kind = row.value_type
    if kind == "quantity":
        number = json.loads(text)
        return {"value": number, "unit": row.entered_unit} if row.entered_unit else number
    if kind == "integer":
        return int(text)
    if kind == "boolean":
        return text == "true"
    if kind == "code_list":
        return json.loads(text)
    return text
