"""Units of measure: one vocabulary of UCUM codes, common spellings accepted, conversions by pint.

Why UCUM: FHIR Observations and CDISC exports carry UCUM codes, so values are stored with the
canonical code and every spelling a site might type (``10^9/L``, ``cells/µL``, ``°C``) is mapped to
it on entry. Conversions between dimensionally compatible units (g/L and mg/dL, 10^9/L and /µL,
°C and °F) are pint's job. Conversions that cross dimensions — creatinine µmol/L to mg/dL (a molar
mass), CMV IU/mL to copies/mL (an assay-specific factor) — are not facts about units but about an
analyte or an assay, so they live in the protocol file next to the item they concern.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from typing import TYPE_CHECKING

from cmvtrial.errors import UnitError

if TYPE_CHECKING:  # pragma: no cover
    import pint

#: Significant digits kept on a normalized number: removes binary noise from unit arithmetic
#: (500 /µL is 0.5 × 10⁹/L, not 0.49999999999999994) without clinical rounding.
SIGNIFICANT_DIGITS = 12

# Canonical UCUM code -> pint expression. "copy" and "iu" are base units of their own, so that a
# conversion between copies and IU can only come from an assay factor in the protocol.
_PINT_EXPRESSION: dict[str, str] = {
    "1": "dimensionless",
    "%": "percent",
    "{score}": "dimensionless",
    "{ratio}": "dimensionless",
    "copies/mL": "copy / milliliter",
    "[IU]/mL": "iu / milliliter",
    "[iU]/L": "iu / liter",
    "[MIU]": "megaiu",
    "[IU]": "iu",
    "10*9/L": "1e9 / liter",
    "10*6/L": "1e6 / liter",
    "10*3/uL": "1e3 / microliter",
    "10*12/L": "1e12 / liter",
    "/uL": "1 / microliter",
    "/L": "1 / liter",
    "g/dL": "gram / deciliter",
    "g/L": "gram / liter",
    "mg/dL": "milligram / deciliter",
    "mg/L": "milligram / liter",
    "ug/L": "microgram / liter",
    "ng/mL": "nanogram / milliliter",
    "pg/mL": "picogram / milliliter",
    "umol/L": "micromole / liter",
    "mmol/L": "millimole / liter",
    "U/L": "enzyme_unit / liter",
    "Cel": "degree_Celsius",
    "[degF]": "degree_Fahrenheit",
    "kg": "kilogram",
    "g": "gram",
    "mg": "milligram",
    "ug": "microgram",
    "mg/kg": "milligram / kilogram",
    "mg/kg/d": "milligram / kilogram / day",
    "mg/d": "milligram / day",
    "mL/min": "milliliter / minute",
    "mL/min/{1.73_m2}": "milliliter / minute",
    "mL": "milliliter",
    "L": "liter",
    "cm": "centimeter",
    "m": "meter",
    "mm[Hg]": "millimeter_Hg",
    "/min": "1 / minute",
    "min": "minute",
    "h": "hour",
    "d": "day",
    "wk": "week",
    "mo": "month",
    "a": "year",
    "kg/m2": "kilogram / meter ** 2",
}

# Common spellings -> canonical code. Keys are compared after _normalise().
_ALIASES: dict[str, str] = {
    "copies/ml": "copies/mL",
    "copy/ml": "copies/mL",
    "cp/ml": "copies/mL",
    "{copies}/ml": "copies/mL",  # UCUM with an annotation, as FHIR lab results carry it (standards.md §4.1)
    "iu/ml": "[IU]/mL",
    "[iu]/ml": "[IU]/mL",
    "miu": "[MIU]",
    "[miu]": "[MIU]",
    "million iu": "[MIU]",
    "iu": "[IU]",
    "[iu]": "[IU]",
    "10^9/l": "10*9/L",
    "x10^9/l": "10*9/L",
    "10e9/l": "10*9/L",
    "10*9/l": "10*9/L",
    "g/l_cells": "10*9/L",
    "10^6/l": "10*6/L",
    "10*6/l": "10*6/L",
    "10^12/l": "10*12/L",
    "10*12/l": "10*12/L",
    "10^3/ul": "10*3/uL",
    "10*3/ul": "10*3/uL",
    "k/ul": "10*3/uL",
    "/ul": "/uL",
    "cells/ul": "/uL",
    "cell/ul": "/uL",
    "/mm3": "/uL",
    "cells/mm3": "/uL",
    "/l": "/L",
    "u/l": "U/L",
    "iu/l": "U/L",
    "cel": "Cel",
    "°c": "Cel",
    "degc": "Cel",
    "c": "Cel",
    "[degf]": "[degF]",
    "°f": "[degF]",
    "degf": "[degF]",
    "f": "[degF]",
    "mg/kg/day": "mg/kg/d",
    "mg/day": "mg/d",
    "ml/min": "mL/min",
    "ml": "mL",
    "l": "L",
    "mmhg": "mm[Hg]",
    "mm[hg]": "mm[Hg]",
    "bpm": "/min",
    "/min": "/min",
    "percent": "%",
    "days": "d",
    "day": "d",
    "hours": "h",
    "weeks": "wk",
    "week": "wk",
    "years": "a",
    "year": "a",
}


def _normalise(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).strip()
    folded = folded.replace("µ", "u").replace("μ", "u").replace("×", "x").replace(" ", "")
    return folded


@functools.lru_cache(maxsize=1)
def _lookup() -> dict[str, str]:
    """Every accepted spelling (normalised, case-folded) -> canonical code."""
    table = {_normalise(code).lower(): code for code in _PINT_EXPRESSION}
    table.update({_normalise(alias).lower(): code for alias, code in _ALIASES.items()})
    return table


def canonical_unit(text: str) -> str:
    """The UCUM code for a unit as written; UnitError when cmvtrial does not know it."""
    if not isinstance(text, str):
        raise UnitError("a unit is required", field="unit", value=text)
    return _canonical_unit(text)


@functools.lru_cache(maxsize=1024)
def _canonical_unit(text: str) -> str:
    if not text.strip():
        raise UnitError("a unit is required", field="unit", value=text)
    normalised = _normalise(text)
    if normalised in _PINT_EXPRESSION:  # exact canonical spelling, case-sensitive first
        return normalised
    code = _lookup().get(normalised.lower())
    if code is None:
        raise UnitError(f"unknown unit '{text}'", field="unit", value=text)
    return code


def is_known_unit(text: str) -> bool:
    try:
        canonical_unit(text)
    except UnitError:
        return False
    return True


def known_units() -> list[str]:
    """The canonical codes, for help text and documentation."""
    return sorted(_PINT_EXPRESSION)


@functools.lru_cache(maxsize=1)
def _registry() -> pint.UnitRegistry:
    import pint

    registry = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    registry.define("copy = [viral_copy]")
    registry.define("iu = [international_unit]")
    registry.define("megaiu = 1e6 * iu")
    if "enzyme_unit" not in registry:
        registry.define("enzyme_unit = micromole / minute")
    return registry


@functools.lru_cache(maxsize=256)
def _scaled_unit(code: str) -> tuple[float, pint.Unit]:
    """A code as (scale, pint unit): ``10*9/L`` is 1e9 times 1/L (pint units carry no factor)."""
    expression = _PINT_EXPRESSION[code]
    registry = _registry()
    if expression[0].isdigit():
        parsed = registry.parse_expression(expression)
        return float(parsed.magnitude), parsed.units
    return 1.0, registry.Unit(expression)


def _quantity(value: float, code: str) -> pint.Quantity:
    scale, unit = _scaled_unit(code)
    return _registry().Quantity(value * scale, unit)


@functools.lru_cache(maxsize=1024)
def are_compatible(from_unit: str, to_unit: str) -> bool:
    """Whether pint can convert between the two units (same dimension). Cached: services ask it
    for every value they store, and parsing units is most of the cost."""
    _, target = _scaled_unit(canonical_unit(to_unit))
    return bool(_quantity(1.0, canonical_unit(from_unit)).is_compatible_with(target))


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert between dimensionally compatible units; UnitError names both units otherwise."""
    source_code = canonical_unit(from_unit)
    target_code = canonical_unit(to_unit)
    if source_code == target_code:
        return float(value)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise UnitError(f"cannot convert non-numeric value {value!r}", field="value", value=value)
    import pint

    try:
        scale, unit = _scaled_unit(target_code)
        return float(_quantity(float(value), source_code).to(unit).magnitude) / scale
    except pint.DimensionalityError:
        raise UnitError(
            f"cannot convert {source_code} to {target_code}: they measure different things",
            field="unit",
            value=from_unit,
            expected=target_code,
        ) from None


def clean_number(value: float) -> float:
    """``value`` without the noise of floating-point unit arithmetic (SIGNIFICANT_DIGITS digits), so
    every module that normalizes a value stores the same number for it."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
