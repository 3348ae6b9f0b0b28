"""The eligibility engine: a protocol's inclusion and exclusion criteria judged on one candidate.

Why a verdict per criterion with its values: an investigator signs off on eligibility and a monitor
checks it, so each criterion shows ``met``, ``not_met`` or ``unknown`` with the values it read, and
what it was missing (DESIGN.md §3 step 2). A criterion whose inputs are missing is unknown, never
silently met (DESIGN.md §2 "Expressions").

The overall verdict (issue 3): eligible (``True``) only when every inclusion is met and no
exclusion is met; not eligible (``False``) as soon as one inclusion is not met or one exclusion is
met — whatever else is unknown; undetermined (``None``) when nothing says "not eligible" but
something is unknown.

Where the numbers live: every threshold is in the protocol's criteria expressions
(``cmv_dna_copies_per_ml > 1000``); every formula constant in its ``derivations`` and ``assay``
sections; unit factors in its items' ``alternative_units``. This module holds none.

What an expression sees: each item the record gave, in the protocol screening form's unit
(quantities converted by pint or the item's alternative units; a bare ULN number takes its analyte's
unit), codes as text, multi-selects as lists, the corticosteroid group as a mapping — plus every
derived value of the protocol. A value outside an item's hard limits is refused (OutOfRange);
soft limits are the data-entry layer's business.

Pure: the protocol and the record go in, a result comes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from cmvtrial.core.derived_values import (
    DerivationParameters,
    DerivedValue,
    UnitBridge,
    convert_for_item,
    derive,
)
from cmvtrial.core.expressions import compile_expression
from cmvtrial.core.protocol import Item, Protocol
from cmvtrial.core.screening_record import Quantity, ScreeningRecord, screening_record_from_data
from cmvtrial.errors import OutOfRange

Verdict = Literal["met", "not_met", "unknown"]

# A ULN given as a bare number is in its analyte's unit (docs/screening-record.md).
_ULN_OF: dict[str, str] = {"alt_uln": "alt", "ast_uln": "ast", "total_bilirubin_uln": "total_bilirubin"}


@dataclass(frozen=True)
class CriterionVerdict:
    """One criterion judged: ``values`` are the names it read (items and derived values) with their
    values; ``missing`` the record keys whose absence left it unknown (empty unless unknown)."""

    id: str
    kind: Literal["inclusion", "exclusion"]
    text: str
    verdict: Verdict
    values: dict[str, object]
    missing: tuple[str, ...] = ()

    @property
    def excludes(self) -> bool:
        """Whether this verdict alone makes the candidate not eligible."""
        return (self.kind == "inclusion" and self.verdict == "not_met") or (
            self.kind == "exclusion" and self.verdict == "met"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "text": self.text,
            "verdict": self.verdict,
            "values": {name: _plain(value) for name, value in self.values.items()},
            "missing": list(self.missing),
        }


@dataclass(frozen=True)
class EligibilityResult:
    """The verdict on one candidate with every criterion's reasons and the derived values."""

    eligible: bool | None
    criteria: tuple[CriterionVerdict, ...]
    derived: dict[str, DerivedValue] = field(default_factory=dict)
    derived_units: dict[str, str | None] = field(default_factory=dict)

    @property
    def reasons_not_eligible(self) -> tuple[CriterionVerdict, ...]:
        """The criteria that exclude (the screen-failure reasons of the CONSORT flow)."""
        return tuple(verdict for verdict in self.criteria if verdict.excludes)

    @property
    def unknown(self) -> tuple[CriterionVerdict, ...]:
        return tuple(verdict for verdict in self.criteria if verdict.verdict == "unknown")

    @property
    def missing(self) -> tuple[str, ...]:
        """Every record key whose absence left some criterion unknown."""
        return tuple(sorted({name for verdict in self.criteria for name in verdict.missing}))

    def to_dict(self) -> dict[str, object]:
        derived: dict[str, object] = {}
        for name, value in self.derived.items():
            entry = value.to_dict()
            entry["unit"] = self.derived_units.get(name)
            derived[name] = entry
        return {
            "eligible": self.eligible,
            "criteria": [verdict.to_dict() for verdict in self.criteria],
            "derived": derived,
        }


def _plain(value: object) -> object:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


# --------------------------------------------------------------------------------------------
# From the protocol


def derivation_parameters(protocol: Protocol) -> DerivationParameters:
    """The formula constants of a protocol, and the unit bridges of its screening items."""
    clearance = protocol.derivations.creatinine_clearance
    bridges: dict[str, tuple[UnitBridge, ...]] = {}
    for path, item in protocol.screening.item_paths().items():
        if item.unit and item.alternative_units:
            bridges[path] = tuple(
                UnitBridge(
                    alternative.unit,
                    item.unit,
                    factor=None if alternative.divisor is not None else alternative.factor,
                    divisor=alternative.divisor,
                )
                for alternative in item.alternative_units
            )
    return DerivationParameters(
        cg_age_offset_years=clearance.age_offset_years,
        cg_divisor=clearance.divisor,
        cg_female_factor=clearance.female_factor,
        cg_weight_basis=clearance.weight,
        cg_creatinine_unit=clearance.serum_creatinine_unit,
        unit_bridges=bridges,
        prednisone_factors=dict(protocol.derivations.prednisone_equivalence),
        iu_to_copies_factor=protocol.assay.cmv_dna.iu_to_copies_factor,
    )


# --------------------------------------------------------------------------------------------
# The record as values


def _as_record(record: ScreeningRecord | Mapping[str, Any]) -> ScreeningRecord:
    if isinstance(record, ScreeningRecord):
        return record
    return screening_record_from_data(record)


def _raw_values(record: ScreeningRecord) -> dict[str, object]:
    """The keys the record gave, with a bare ULN number given its analyte's unit. When the analyte
    is absent the number stays bare: its unit cannot be known, and every use of it is unknown
    anyway for want of the analyte (which is what gets reported missing)."""
    values = record.provided()
    for uln, analyte in _ULN_OF.items():
        given, measured = values.get(uln), values.get(analyte)
        if isinstance(given, (int, float)) and not isinstance(given, bool) and isinstance(measured, Quantity):
            values[uln] = Quantity(value=given, unit=measured.unit)
    return values


def _check_limits(path: str, item: Item, number: float, unit: str | None) -> None:
    limits = item.hard_limits
    if limits is None:
        return
    shown = f"{number:g}" + (f" {unit}" if unit else "")
    if limits.min is not None and number < limits.min:
        raise OutOfRange(
            f"{path} {shown} is below the protocol's hard limit {limits.min:g}", field=path, value=number,
            limit=limits.min,
        )
    if limits.max is not None and number > limits.max:
        raise OutOfRange(
            f"{path} {shown} is above the protocol's hard limit {limits.max:g}", field=path, value=number,
            limit=limits.max,
        )


def _normalised(
    raw: Mapping[str, object], items: Mapping[str, Item], params: DerivationParameters
) -> dict[str, object]:
    """What expressions see: quantities as numbers in the item's unit, groups as mappings."""
    values: dict[str, object] = {}
    for name, value in raw.items():
        item = items.get(name)
        if name in _ULN_OF and not isinstance(value, Quantity):
            values[name] = None  # a bare ULN without its analyte: unit unknown, so value unknown
        elif isinstance(value, Quantity):
            if item is not None and item.unit is not None:
                number = convert_for_item(name, value.value, value.unit, item.unit, params.unit_bridges)
                _check_limits(name, item, number, item.unit)
                values[name] = number
            else:
                values[name] = value.value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if item is not None and item.type in ("quantity", "integer"):
                _check_limits(name, item, float(value), item.unit)
            values[name] = value
        elif hasattr(value, "model_dump"):
            values[name] = value.model_dump()  # type: ignore[attr-defined]
        else:
            values[name] = value
    return values


# --------------------------------------------------------------------------------------------
# The engine


def _verdict(value: object) -> Verdict:
    if value is None:
        return "unknown"
    return "met" if bool(value) else "not_met"


def expression_values(
    protocol: Protocol, record: ScreeningRecord | Mapping[str, Any]
) -> tuple[dict[str, object], dict[str, DerivedValue]]:
    """What the protocol's expressions read for ``record``: its items in the screening form's units
    plus every derived value, and the derived values with their reasons. Shared by the criteria
    and by the randomization strata, so a factor level is judged on exactly what eligibility saw."""
    checked = _as_record(record)
    params = derivation_parameters(protocol)
    raw = _raw_values(checked)
    values = _normalised(raw, protocol.screening.item_paths(), params)
    derived: dict[str, DerivedValue] = {}
    for spec in protocol.derived_values:
        result = derive(spec.name, spec.method, spec.inputs, raw, params)
        derived[spec.name] = result
        values[spec.name] = result.value
    return values, derived


def evaluate_eligibility(
    protocol: Protocol, record: ScreeningRecord | Mapping[str, Any]
) -> EligibilityResult:
    """Judge every criterion of ``protocol`` on ``record`` (a ScreeningRecord or its JSON data).

    Bad input (a field the record model refuses, a unit the protocol gives no factor for, a value
    outside hard limits, a steroid without a factor) raises InvalidInput naming the field.
    """
    values, derived = expression_values(protocol, record)

    verdicts: list[CriterionVerdict] = []
    for criterion in protocol.eligibility:
        expression = compile_expression(criterion.expression)
        outcome = expression.evaluate(values)
        missing: set[str] = set()
        for name in outcome.missing:
            missing.update(derived[name].missing if name in derived else {name})
        verdicts.append(
            CriterionVerdict(
                id=criterion.id,
                kind=criterion.kind,
                text=criterion.text,
                verdict=_verdict(outcome.value),
                values=dict(outcome.used),
                missing=tuple(sorted(missing)),
            )
        )

    if any(verdict.excludes for verdict in verdicts):
        eligible: bool | None = False
    elif any(verdict.verdict == "unknown" for verdict in verdicts):
        eligible = None
    else:
        eligible = True
    return EligibilityResult(
        eligible=eligible,
        criteria=tuple(verdicts),
        derived=derived,
        derived_units={spec.name: spec.unit for spec in protocol.derived_values},
    )

