"""Values computed from screening data: age, Cockcroft-Gault creatinine clearance, prednisone-
equivalent dose per kg, multiples of the upper limit of normal, CMV-DNA in copies/mL.

Why here and not in the expressions: these are formulas with constants (140, 72, 0.85, 88.4, the
steroid factors, the assay factor) that belong to the protocol, not to code (DESIGN.md §2
"Protocol as data"). The functions take every constant as an argument; :class:`DerivationParameters`
carries them from the protocol's ``derivations`` and ``assay`` sections.

The catalogue :data:`DERIVATIONS` maps the method names a protocol's ``derived_values[].method`` may
use to the functions. Each method receives its inputs by position, in the order the protocol lists
them, and returns a :class:`DerivedValue`: the value with the inputs it used, or ``None`` (unknown)
with the inputs it was missing. An input that is absent or ``None`` is missing, except where a
method says that ``None`` means something (a ``corticosteroid`` of ``None`` means "no steroid").

Derived floats are rounded to 9 decimals to remove binary floating-point noise, so that a value at a
boundary (CrCl exactly 30 mL/min from 3 mg/dL) compares as the arithmetic on paper says; no
clinical rounding is applied.

Pure: ``today`` is never read — age is computed at the screening date given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cmvtrial.core import units
from cmvtrial.errors import InvalidInput, UnitError

#: Decimals kept on derived floats (noise removal only, see the module docstring).
NOISE_DECIMALS = 9


def _clean(value: float) -> float:
    return round(float(value), NOISE_DECIMALS)


def _positive(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{field_name} must be a number", field=field_name, value=value)
    if value <= 0:
        raise InvalidInput(f"{field_name} must be greater than 0", field=field_name, value=value)
    return float(value)


def _non_negative(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{field_name} must be a number", field=field_name, value=value)
    if value < 0:
        raise InvalidInput(f"{field_name} must not be negative", field=field_name, value=value)
    return float(value)


# --------------------------------------------------------------------------------------------
# The formulas


def age_in_years(birth_date: date, on_date: date) -> int:
    """Completed years at ``on_date``: the birthday counts from its calendar day.

    A person born on 29 February completes a year on 1 March in common years (their birthday has
    not happened on 28 February); this is what comparing (month, day) gives, and it never makes a
    candidate older than the calendar says.
    """
    for name, value in (("birth_date", birth_date), ("screening_date", on_date)):
        if not isinstance(value, date):
            raise InvalidInput(f"{name} must be a date", field=name, value=value)
    if on_date < birth_date:
        raise InvalidInput(
            f"screening date {on_date.isoformat()} is before the birth date {birth_date.isoformat()}",
            field="screening_date",
            value=on_date.isoformat(),
        )
    before_birthday = (on_date.month, on_date.day) < (birth_date.month, birth_date.day)
    return on_date.year - birth_date.year - int(before_birthday)


def cockcroft_gault(
    *,
    age_years: float,
    weight_kg: float,
    creatinine_mg_dl: float,
    female: bool,
    age_offset_years: float,
    divisor: float,
    female_factor: float,
) -> float:
    """CrCl (mL/min) = (offset - age) x weight / (divisor x creatinine), x female factor for women.

    reference/domain.md §1.4 (offset 140, divisor 72, female 0.85 — passed in from the protocol).
    Not normalised to body surface. A result at or below 0 (age at or beyond the offset) is 0.
    """
    weight = _positive(weight_kg, "weight_kg")
    creatinine = _positive(creatinine_mg_dl, "serum_creatinine")
    age = _non_negative(age_years, "age_years")
    clearance = max(age_offset_years - age, 0.0) * weight / (divisor * creatinine)
    return _clean(clearance * female_factor if female else clearance)


def prednisone_equivalent_per_kg(
    drug: str, daily_dose_mg: float, weight_kg: float, factors: Mapping[str, float]
) -> float:
    """Prednisone-equivalent mg/kg/day = daily dose x the drug's factor / body weight.

    reference/domain.md §2: the factor converts mg of the drug into mg of prednisone. A drug the
    protocol has no factor for cannot be judged: InvalidInput naming the drug.
    """
    if drug not in factors:
        raise InvalidInput(
            f"no prednisone-equivalence factor for '{drug}' in the protocol; known: "
            + ", ".join(sorted(factors)),
            field="corticosteroid.drug",
            value=drug,
        )
    dose = _non_negative(daily_dose_mg, "corticosteroid.daily_dose_mg")
    return _clean(dose * factors[drug] / _positive(weight_kg, "weight_kg"))


def multiple_of_uln(value: float, uln: float) -> float:
    """A lab value as a multiple of its upper limit of normal (both in the same unit)."""
    return _clean(_non_negative(value, "value") / _positive(uln, "uln"))


def cmv_copies_per_ml(value: float, unit: str, iu_to_copies_factor: float) -> float:
    """CMV-DNA in copies/mL: as measured, or IU/mL x the assay's factor (reference/domain.md §3.1).

    Copies and IU are not convertible by units alone — the factor belongs to the assay.
    """
    amount = _non_negative(value, "cmv_dna")
    code = units.canonical_unit(unit)
    if code == units.canonical_unit("copies/mL"):
        return _clean(amount)
    if code == units.canonical_unit("IU/mL"):
        return _clean(amount * iu_to_copies_factor)
    raise UnitError(
        f"CMV-DNA must be in copies/mL or IU/mL, not {code}", field="cmv_dna.unit", value=unit
    )


# --------------------------------------------------------------------------------------------
# The catalogue


@dataclass(frozen=True)
class UnitBridge:
    """A conversion across dimensions for one analyte: value_in ``to_unit`` = value x factor, or
    value / divisor (exact when the source states a divisor, as creatinine's 88.4 µmol/L per mg/dL).
    Bridges come from the protocol items' ``alternative_units``; pint handles the rest."""

    from_unit: str
    to_unit: str
    factor: float | None = None
    divisor: float | None = None

    def apply(self, value: float) -> float:
        return value / self.divisor if self.divisor is not None else value * (self.factor or 0.0)

    def reversed(self) -> UnitBridge:
        if self.divisor is not None:
            return UnitBridge(self.to_unit, self.from_unit, factor=self.divisor)
        return UnitBridge(self.to_unit, self.from_unit, divisor=self.factor)


def convert_for_item(
    item: str, value: float, unit: str, target: str, bridges: Mapping[str, Sequence[UnitBridge]]
) -> float:
    """``value`` of ``item`` from ``unit`` to ``target``: by pint within a dimension, else through
    one of the item's bridges (either direction) with pint on both sides of it."""
    if units.are_compatible(unit, target):
        return units.convert(value, unit, target)
    for forward in bridges.get(item, ()):
        for bridge in (forward, forward.reversed()):
            if units.are_compatible(unit, bridge.from_unit) and units.are_compatible(bridge.to_unit, target):
                bridged = bridge.apply(units.convert(value, unit, bridge.from_unit))
                return units.convert(bridged, bridge.to_unit, target)
    raise UnitError(
        f"{item} in {units.canonical_unit(unit)} cannot be expressed in {units.canonical_unit(target)}: "
        "the protocol gives no factor",
        field=f"{item}.unit",
        value=unit,
    )


@dataclass(frozen=True)
class DerivationParameters:
    """The protocol's constants for the formulas (``derivation_parameters`` in eligibility builds it)."""

    cg_age_offset_years: float | None = None
    cg_divisor: float | None = None
    cg_female_factor: float | None = None
    cg_weight_basis: str = "actual"
    #: The creatinine unit the Cockcroft-Gault constants assume (mg/dL, reference/domain.md §1.4).
    cg_creatinine_unit: str = "mg/dL"
    #: Cross-dimension conversions per item id (creatinine µmol/L <-> mg/dL, ...).
    unit_bridges: Mapping[str, tuple[UnitBridge, ...]] = field(default_factory=dict)
    prednisone_factors: Mapping[str, float] = field(default_factory=dict)
    iu_to_copies_factor: float | None = None
    #: The sex code the female factor applies to (the screening record's code list).
    female_code: str = "F"


@dataclass(frozen=True)
class DerivedValue:
    """A derived value with its reasons: ``value`` is None when unknown, then ``missing`` says why."""

    name: str
    method: str
    value: float | int | None
    used: dict[str, object]
    missing: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "method": self.method,
            "used": {k: _plain(v) for k, v in self.used.items()},
            "missing": sorted(self.missing),
        }


def _plain(value: object) -> object:
    """JSON-friendly form of an input value (dates as ISO text, quantities as {value, unit})."""
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "value") and hasattr(value, "unit"):
        return {"value": value.value, "unit": value.unit}  # type: ignore[attr-defined]
    if hasattr(value, "model_dump"):
        return value.model_dump()  # type: ignore[attr-defined]
    return value


def _amount(value: object, field_name: str) -> tuple[float, str | None]:
    """(number, unit) of a quantity given as an object with value/unit, a mapping, or a number."""
    if isinstance(value, Mapping):
        return value.get("value"), value.get("unit")  # type: ignore[return-value]
    if hasattr(value, "value") and hasattr(value, "unit"):
        return value.value, value.unit  # type: ignore[attr-defined]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), None
    raise InvalidInput(f"{field_name} must be a quantity", field=field_name, value=value)


def _require(parameter: float | None, name: str) -> float:
    if parameter is None:
        raise InvalidInput(
            f"the protocol does not define '{name}', which this derived value needs",
            field=f"derivations.{name}",
        )
    return parameter


def _creatinine_in_cg_unit(value: object, params: DerivationParameters, item: str) -> float:
    amount, unit = _amount(value, item)
    if unit is None:
        raise UnitError(f"{item} needs an explicit unit", field=f"{item}.unit")
    return convert_for_item(item, amount, unit, params.cg_creatinine_unit, params.unit_bridges)


def _weight(value: object) -> float:
    amount, unit = _amount(value, "weight_kg")
    return amount if unit is None else units.convert(amount, unit, "kg")


def _age(inputs: Sequence[object], names: Sequence[str], params: DerivationParameters) -> int:
    birth, screening = inputs
    return age_in_years(birth, screening)  # type: ignore[arg-type]


def _cockcroft_gault(inputs: Sequence[object], names: Sequence[str], params: DerivationParameters) -> float:
    birth, screening, sex, weight, creatinine = inputs
    if params.cg_weight_basis != "actual":
        raise InvalidInput(
            f"Cockcroft-Gault with '{params.cg_weight_basis}' body weight needs height, which the "
            "screening record does not hold; use weight: actual",
            field="derivations.creatinine_clearance.weight",
            value=params.cg_weight_basis,
        )
    return cockcroft_gault(
        age_years=age_in_years(birth, screening),  # type: ignore[arg-type]
        weight_kg=_weight(weight),
        creatinine_mg_dl=_creatinine_in_cg_unit(creatinine, params, names[4]),
        female=sex == params.female_code,
        age_offset_years=_require(params.cg_age_offset_years, "age_offset_years"),
        divisor=_require(params.cg_divisor, "divisor"),
        female_factor=_require(params.cg_female_factor, "female_factor"),
    )


def _prednisone(inputs: Sequence[object], names: Sequence[str], params: DerivationParameters) -> float:
    steroid, weight = inputs
    if steroid is None:  # explicitly none taken
        return 0.0
    return prednisone_equivalent_per_kg(
        _field(steroid, "drug"), _field(steroid, "daily_dose_mg"), _weight(weight), params.prednisone_factors
    )


def _field(container: object, name: str) -> Any:
    if isinstance(container, Mapping):
        return container.get(name)
    return getattr(container, name, None)


def _uln_multiple(inputs: Sequence[object], names: Sequence[str], params: DerivationParameters) -> float:
    value, uln = inputs
    amount, unit = _amount(value, "value")
    limit, limit_unit = _amount(uln, "uln")
    if unit is not None and limit_unit is not None:
        limit = units.convert(limit, limit_unit, unit)
    return multiple_of_uln(amount, limit)


def _cmv(inputs: Sequence[object], names: Sequence[str], params: DerivationParameters) -> float:
    (measured,) = inputs
    amount, unit = _amount(measured, "cmv_dna")
    if unit is None:
        raise UnitError("cmv_dna needs an explicit unit (copies/mL or IU/mL)", field="cmv_dna.unit")
    factor = params.iu_to_copies_factor
    if units.canonical_unit(unit) == units.canonical_unit("IU/mL"):
        factor = _require(factor, "iu_to_copies_factor")
    return cmv_copies_per_ml(amount, unit, factor if factor is not None else 1.0)


@dataclass(frozen=True)
class Derivation:
    """A catalogue entry: the function, how many inputs it takes, which may be None on purpose."""

    function: Callable[[Sequence[object], Sequence[str], DerivationParameters], float | int]
    arity: int
    description: str
    none_allowed: frozenset[int] = frozenset()
    inputs_hint: tuple[str, ...] = ()

    def derive(
        self, name: str, method: str, input_names: Sequence[str], values: Mapping[str, object],
        params: DerivationParameters,
    ) -> DerivedValue:
        if len(input_names) != self.arity:
            raise InvalidInput(
                f"derived value '{name}': method {method} takes {self.arity} inputs "
                f"({', '.join(self.inputs_hint)}), the protocol lists {len(input_names)}",
                field=f"derived_values.{name}.inputs",
            )
        missing = frozenset(
            input_name
            for position, input_name in enumerate(input_names)
            if input_name not in values
            or (values[input_name] is None and position not in self.none_allowed)
        )
        used = {n: values[n] for n in input_names if n in values and n not in missing}
        if missing:
            return DerivedValue(name, method, None, used, missing)
        result = self.function([values[n] for n in input_names], list(input_names), params)
        return DerivedValue(name, method, result, used)


#: Method name (as in the protocol's derived_values[].method) -> derivation.
DERIVATIONS: dict[str, Derivation] = {
    "age_in_years": Derivation(
        _age, 2, "completed years at a date", inputs_hint=("birth_date", "on_date")
    ),
    "cockcroft_gault": Derivation(
        _cockcroft_gault, 5, "Cockcroft-Gault creatinine clearance, mL/min",
        inputs_hint=("birth_date", "on_date", "sex", "weight", "serum_creatinine"),
    ),
    "prednisone_equivalent_per_kg": Derivation(
        _prednisone, 2, "prednisone-equivalent mg/kg/day; a corticosteroid of null means none",
        none_allowed=frozenset({0}), inputs_hint=("corticosteroid", "weight"),
    ),
    "multiple_of_uln": Derivation(
        _uln_multiple, 2, "a value as a multiple of its upper limit of normal", inputs_hint=("value", "uln")
    ),
    "cmv_copies_per_ml": Derivation(
        _cmv, 1, "CMV-DNA in copies/mL (IU/mL through the assay factor)", inputs_hint=("cmv_dna",)
    ),
}


def derive(
    name: str, method: str, input_names: Sequence[str], values: Mapping[str, object],
    params: DerivationParameters,
) -> DerivedValue:
    """Compute one derived value by catalogue method; an unknown method is InvalidInput."""
    derivation = DERIVATIONS.get(method)
    if derivation is None:
        raise InvalidInput(
            f"unknown derivation method '{method}'; known: {', '.join(sorted(DERIVATIONS))}",
            field=f"derived_values.{name}.method",
            value=method,
        )
    return derivation.derive(name, method, input_names, values, params)
