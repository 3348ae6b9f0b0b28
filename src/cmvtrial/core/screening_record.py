"""The screening record: the public JSON a site submits to have a candidate's eligibility judged.

The format is fixed by issue 3 and documented in ``docs/screening-record.md``. Why a strict model:
eligibility is a safety decision, so a typo must fail loudly rather than turn into "unknown" —
unknown keys, units cmvtrial does not know, values no patient can have (negative weight, a
screening date before birth) and text where a number belongs are refused with InvalidInput naming
the field. A key that is *absent* (or ``null``) is missing data, never "no": the eligibility engine
reports it as unknown. The one exception is ``corticosteroid``, where ``null`` explicitly means
"no corticosteroid" and only an absent key is unknown.

Quantities carry explicit units (``{"value": 1200, "unit": "copies/mL"}``), checked against the
vocabulary of :mod:`cmvtrial.core.units` and stored with the canonical UCUM code. Whether the
protocol accepts a unit for an item (and how it converts) is judged later, against the protocol.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cmvtrial.core import units
from cmvtrial.errors import InvalidInput, UnitError

Sex = Literal["F", "M"]
Diagnosis = Literal["SLE", "RA", "SSc", "Sjogren", "vasculitis", "myositis", "other-rheumatic", "none"]
Infection = Literal["bacteremia", "hbv", "hcv", "hiv", "syphilis", "ebv", "other"]
Comorbidity = Literal["hematopathy", "gastrointestinal", "endocrinopathy", "pulmonary", "neuropathy"]
SteroidDrug = Literal[
    "prednisone", "prednisolone", "methylprednisolone", "hydrocortisone", "dexamethasone", "betamethasone"
]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _unit_error(unit: object) -> PydanticCustomError:
    return PydanticCustomError("unit", "unknown unit '{unit}'", {"unit": unit})


class Quantity(BaseModel):
    """A measured value with its unit, e.g. ``{"value": 88, "unit": "umol/L"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: Number
    unit: str

    @field_validator("unit", mode="before")
    @classmethod
    def _known_unit(cls, unit: object) -> str:
        if not isinstance(unit, str):
            raise PydanticCustomError("unit", "the unit must be text, e.g. \"mg/dL\"")
        try:
            return units.canonical_unit(unit)
        except UnitError:
            raise _unit_error(unit) from None


class Corticosteroid(BaseModel):
    """The corticosteroid taken now: the drug and its total daily dose in mg."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drug: SteroidDrug | None = None
    daily_dose_mg: Number | None = None

    @field_validator("daily_dose_mg")
    @classmethod
    def _dose_not_negative(cls, dose: float | None) -> float | None:
        if dose is not None and dose < 0:
            raise ValueError(f"a daily dose cannot be negative (got {dose:g})")
        return dose


def _parse_date(value: object) -> object:
    if isinstance(value, date) and not hasattr(value, "hour"):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"'{value}' is not a calendar date") from None
    raise ValueError("must be an ISO date YYYY-MM-DD")


# Unit families the record accepts per key (format facts: "alt in U/L", creatinine by mass or moles).
_UNIT_FAMILIES: dict[str, tuple[str, ...]] = {
    "cmv_dna": ("copies/mL", "[IU]/mL"),
    "serum_creatinine": ("mg/dL", "umol/L"),
    "alt": ("U/L",),
    "ast": ("U/L",),
    "total_bilirubin": ("mg/dL", "umol/L"),
}
# ULN key -> the analyte whose unit a bare number takes and whose family the ULN must share.
_ULN_OF: dict[str, str] = {"alt_uln": "alt", "ast_uln": "ast", "total_bilirubin_uln": "total_bilirubin"}
# Keys whose value (number part) must be > 0, or >= 0.
_POSITIVE = ("serum_creatinine", "alt_uln", "ast_uln", "total_bilirubin_uln")
_NOT_NEGATIVE = ("cmv_dna", "alt", "ast", "total_bilirubin")


class ScreeningRecord(BaseModel):
    """One candidate's screening data (docs/screening-record.md). Every key is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    screening_date: date | None = None
    birth_date: date | None = None
    sex: Sex | None = None
    weight_kg: Number | None = None
    diagnosis: Diagnosis | None = None
    cmv_dna: Quantity | None = None
    serum_creatinine: Quantity | None = None
    alt: Quantity | None = None
    ast: Quantity | None = None
    alt_uln: Quantity | Number | None = None
    ast_uln: Quantity | Number | None = None
    total_bilirubin: Quantity | None = None
    total_bilirubin_uln: Quantity | Number | None = None
    corticosteroid: Corticosteroid | None = None
    nyha_class: Annotated[int, Field(strict=True, ge=1, le=4)] | None = None
    other_infections: list[Infection] | None = None
    il2_allergy: Annotated[bool, Field(strict=True)] | None = None
    malignancy: Annotated[bool, Field(strict=True)] | None = None
    uncontrolled_psychiatric: Annotated[bool, Field(strict=True)] | None = None
    pregnant_or_breastfeeding: Annotated[bool, Field(strict=True)] | None = None
    severe_comorbidities: list[Comorbidity] | None = None

    @field_validator("screening_date", "birth_date", mode="before")
    @classmethod
    def _iso_date(cls, value: object) -> object:
        return None if value is None else _parse_date(value)

    @field_validator("weight_kg", mode="before")
    @classmethod
    def _weight_in_kg(cls, value: object) -> object:
        """A bare number is kg (the key says so); ``{value, unit}`` in any mass unit is converted."""
        if isinstance(value, Mapping):
            quantity = Quantity.model_validate(value)
            try:
                return units.convert(quantity.value, quantity.unit, "kg")
            except UnitError:
                raise PydanticCustomError(
                    "unit", "weight must be a mass (kg), not {unit}", {"unit": quantity.unit}
                ) from None
        return value

    @field_validator("weight_kg")
    @classmethod
    def _weight_positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError(f"must be greater than 0 kg (got {value:g})")
        return value

    @field_validator("other_infections", "severe_comorbidities")
    @classmethod
    def _no_duplicates(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError("lists each choice at most once")
        return values

    @model_validator(mode="after")
    def _consistent(self) -> ScreeningRecord:
        if self.birth_date and self.screening_date and self.screening_date < self.birth_date:
            raise _field_error(
                "screening_date",
                f"screening date {self.screening_date.isoformat()} is before the birth date "
                f"{self.birth_date.isoformat()}",
            )
        for key, family in _UNIT_FAMILIES.items():
            quantity = getattr(self, key)
            if quantity is not None and not any(units.are_compatible(quantity.unit, u) for u in family):
                raise _field_error(
                    f"{key}.unit", f"{key} must be in {' or '.join(family)}, not {quantity.unit}", unit=True
                )
        for key in _POSITIVE + _NOT_NEGATIVE:
            value = getattr(self, key)
            number = value.value if isinstance(value, Quantity) else value
            if number is None:
                continue
            if key in _POSITIVE and number <= 0:
                raise _field_error(key, f"{key} must be greater than 0 (got {number:g})")
            if key in _NOT_NEGATIVE and number < 0:
                raise _field_error(key, f"{key} cannot be negative (got {number:g})")
        for uln_key, analyte in _ULN_OF.items():
            uln, measured = getattr(self, uln_key), getattr(self, analyte)
            if isinstance(uln, Quantity) and not any(
                units.are_compatible(uln.unit, u) for u in _UNIT_FAMILIES[analyte]
            ):
                raise _field_error(f"{uln_key}.unit", f"{uln_key} must be in the unit of {analyte}", unit=True)
            if isinstance(uln, Quantity) and measured is not None and not units.are_compatible(uln.unit, measured.unit):
                raise _field_error(
                    f"{uln_key}.unit",
                    f"{uln_key} is in {uln.unit} but {analyte} in {measured.unit}; give both in the same unit",
                    unit=True,
                )
        return self

    def provided(self) -> dict[str, Any]:
        """The keys the record gave (``null`` included), by name. Absent keys are not listed."""
        return {name: getattr(self, name) for name in type(self).model_fields if name in self.model_fields_set}


class _FieldProblem(ValueError):
    def __init__(self, field: str, message: str, unit: bool) -> None:
        super().__init__(message)
        self.field, self.message, self.unit = field, message, unit


def _field_error(field: str, message: str, *, unit: bool = False) -> _FieldProblem:
    return _FieldProblem(field, message, unit)


def _problem_of(error: Mapping[str, Any]) -> tuple[str, str, bool]:
    """(dotted field, message, is-a-unit-problem) of one pydantic error."""
    context = error.get("ctx") or {}
    inner = context.get("error")
    if isinstance(inner, _FieldProblem):
        return inner.field, inner.message, inner.unit
    location = [str(part) for part in error["loc"] if not _is_union_branch(part)]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (see docs/screening-record.md for the keys)"
    elif error["type"] in {"model_type", "dict_type"}:
        message = 'needs an object with a value and a unit, e.g. {"value": 1.2, "unit": "mg/dL"}'
    return ".".join(location) or "record", message, error["type"] == "unit"


def _is_union_branch(part: object) -> bool:
    # pydantic names union members in the location ("Quantity", "float", "constrained-float").
    return isinstance(part, str) and (part[:1].isupper() or part in {"float", "int", "bool", "str"})


def _relevant(error: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """For a ``Quantity | number`` key, keep only the errors of the branch the input took."""
    location = error["loc"]
    if len(location) < 2 or not _is_union_branch(location[1]):
        return True
    wrote_object = isinstance(data.get(str(location[0])), Mapping)
    return (location[1] == "Quantity") == wrote_object


def screening_record_from_data(data: object) -> ScreeningRecord:
    """Validate already-parsed data; InvalidInput (UnitError for units) names the first field."""
    if not isinstance(data, Mapping):
        raise InvalidInput("a screening record must be a JSON object", field="record")
    try:
        return ScreeningRecord.model_validate(dict(data))
    except ValidationError as error:
        problems = []
        first_unit = False
        relevant = [item for item in error.errors() if _relevant(item, data)] or error.errors()
        for index, item in enumerate(relevant):
            field, message, is_unit = _problem_of(item)
            if index == 0:
                first_unit = is_unit
            problems.append({"location": field, "message": message})
        # Union fields report one error per member; show each field once.
        unique = list({p["location"]: p for p in problems}.values())
        family = UnitError if first_unit else InvalidInput
        first = unique[0]
        raise family(
            f"screening record: {first['location']}: {first['message']}",
            field=first["location"],
            problems=unique if len(unique) > 1 else [],
        ) from None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise InvalidInput(f"screening record: key '{key}' appears twice", field=key)
        seen[key] = value
    return seen


def _reject_constant(name: str) -> float:
    raise InvalidInput(f"screening record: {name} is not a number JSON allows", field="json")


def parse_screening_record(text: str, source: str = "<record>") -> ScreeningRecord:
    """Parse the JSON text of a screening record; malformed JSON names the line and column."""
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"{source}: malformed JSON at line {error.lineno} column {error.colno}: {error.msg}",
            field="json",
        ) from None
    return screening_record_from_data(data)

