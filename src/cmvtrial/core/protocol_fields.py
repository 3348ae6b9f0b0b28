"""Field types shared by the protocol models: ids, codes, units, expressions, LOINC codes.

Why a module of their own: every part of the protocol model (:mod:`cmvtrial.core.protocol`,
:mod:`cmvtrial.core.protocol_forms`) checks its fields the same way, and these checks turn domain
errors (an unknown unit, an expression that does not compile) into the ``ValueError`` pydantic
reports with the field's location.
"""

from __future__ import annotations

import difflib
import keyword
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from cmvtrial.core import units
from cmvtrial.core.expressions import compile_expression
from cmvtrial.errors import InvalidInput


def _not_keyword(name: str) -> str:
    if keyword.iskeyword(name) or name in {"True", "False", "None"}:
        raise ValueError(f"'{name}' is a reserved word and cannot be used as an id in expressions")
    return name


def _known_unit(text: str) -> str:
    try:
        return units.canonical_unit(text)
    except InvalidInput as error:
        close = difflib.get_close_matches(str(text), units.known_units(), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else " (see the units in docs/protocol-format.md)"
        raise ValueError(error.message + hint) from None


def _compiles(text: str) -> str:
    try:
        return compile_expression(text).text
    except InvalidInput as error:
        raise ValueError(error.message) from None


def _loinc_check_digit(code: str) -> str:
    """LOINC codes end in a mod-10 check digit (the Luhn algorithm); a typo rarely survives it."""
    digits = [int(c) for c in code.replace("-", "")]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 1:
            digit *= 2
            digit = digit - 9 if digit > 9 else digit
        total += digit
    if total % 10:
        raise ValueError(f"LOINC code '{code}' has a wrong check digit")
    return code


#: Ids that expressions use as names: letters, digits, underscore; not a Python keyword.
Identifier = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64),
    AfterValidator(_not_keyword),
]
#: Codes shown to people (criteria, visits, codelist entries): a little more liberal.
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", max_length=64)]
Text = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]
Unit = Annotated[str, AfterValidator(_known_unit), Field(description="A unit; stored as its UCUM code.")]
ExpressionText = Annotated[
    str, AfterValidator(_compiles), Field(description="An expression (see docs/protocol-format.md).")
]
Loinc = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,7}-[0-9]$"), AfterValidator(_loinc_check_digit)]
Notes = tuple[str, ...]

Anchor = Literal["screening", "randomization", "end_of_treatment"]
ItemType = Literal[
    "quantity", "integer", "text", "date", "datetime", "boolean", "code", "code_list", "group"
]
#: Derived-value methods and the inputs each takes, in order (implemented by the eligibility engine).
DERIVATION_METHODS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "age_in_years": (("birth date", ("date",)), ("reference date", ("date", "datetime"))),
    "cockcroft_gault": (
        ("birth date", ("date",)),
        ("reference date", ("date", "datetime")),
        ("sex", ("code",)),
        ("body weight", ("quantity",)),
        ("serum creatinine", ("quantity",)),
    ),
    "prednisone_equivalent_per_kg": (("corticosteroid", ("group",)), ("body weight", ("quantity",))),
    "multiple_of_uln": (("value", ("quantity",)), ("upper limit of normal", ("quantity",))),
    "cmv_copies_per_ml": (("CMV-DNA load", ("quantity",)),),
}
DerivationMethod = Literal[
    "age_in_years", "cockcroft_gault", "prednisone_equivalent_per_kg", "multiple_of_uln",
    "cmv_copies_per_ml",
]
StopRuleName = Literal["cmv_negativity", "fixed_days"]
AnalysisMethod = Literal[
    "kaplan_meier_logrank_cox", "mixed_model_log10_decline", "ancova_change_from_baseline",
    "adverse_event_summary", "proportion", "descriptive",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
