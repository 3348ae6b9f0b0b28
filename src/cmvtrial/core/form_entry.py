"""One form submission checked against the protocol's form definition: the EDC's entry rules.

Why one pure function for it (``validate_form``): the CLI's ``enter`` command, the API and the web
pages must apply exactly the same rules, and the data-capture service should only have to store what
comes back and open a query per finding. So everything the protocol says about an item is applied
here — its type, its codelist, the units it accepts (its own, one of its ``alternative_units`` with
the protocol's factor, or any unit of the same dimension, converted by pint), its hard limits, the
form's edit checks — and the result carries both the value *as entered* and the value *normalized*
to the item's primary unit, as CDISC ODM and the store keep them (DESIGN.md §2 "Forms like ODM").

What is refused and what is only flagged (STYLE.md "Errors"):

- refused — ``InvalidInput`` listing every problem, each naming its item: an unknown item, a value
  of the wrong type, a code outside the codelist, a hard edit check that fails; ``UnitError`` when
  the first problem is a unit the item does not accept; ``OutOfRange`` when it is a value outside
  the item's hard limits (the message names the limit). Nothing is stored.
- flagged — ``Finding`` results, never exceptions: a value outside its soft limits, a soft edit
  check that fails. The service turns each into a query.
- incomplete — required items that are absent are listed in ``missing_required``; a form may be
  saved in progress, but ``require_complete()`` refuses to mark it complete until they are there.

An item may be answered "not done" with ``{"missing_reason": "..."}``: that is an answer (it
satisfies ``required``) without a value. An absent key or ``null`` is simply not entered yet.
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
from cmvtrial.core.expressions import compile_expression
from cmvtrial.core.units import clean_number
from cmvtrial.errors import InvalidInput, OutOfRange, UnitError

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Form, Item, Protocol

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
            "values": {k: _plain(v) for k, v in self.values.items()},
        }


@dataclass(frozen=True)
class FormEntry:
    """A checked submission of one form: the values, the findings, what is still missing."""

    form_id: str
    values: Mapping[str, EnteredValue]
    findings: tuple[Finding, ...]
    missing_required: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing_required

    def require_complete(self) -> None:
        """Refuse to mark the form complete while a required item is unanswered."""
        if self.missing_required:
            missing = ", ".join(self.missing_required)
            raise InvalidInput(
                f"form '{self.form_id}' cannot be complete: required item(s) missing: {missing}",
                field=self.missing_required[0],
                problems=[{"location": path, "message": "required"} for path in self.missing_required],
            )

    def expression_values(self) -> dict[str, object]:
        """The normalized values by item path, as edit checks and dose holds read them."""
        return {path: entry.value for path, entry in self.values.items() if entry.value is not None}

    def to_dict(self) -> dict[str, object]:
        return {
            "form": self.form_id,
            "complete": self.complete,
            "missing_required": list(self.missing_required),
            "values": {path: _plain(entry.value) for path, entry in self.values.items()},
            "findings": [finding.to_dict() for finding in self.findings],
        }


def _plain(value: object) -> object:
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


class _Problem(Exception):
    def __init__(self, path: str, message: str, family: type[InvalidInput] = InvalidInput, **details: Any):
        super().__init__(message)
        self.path, self.message, self.family, self.details = path, message, family, details


def _number(raw: object, path: str) -> int | float:
    """The number as given (an int stays an int, so the entered value is kept exactly)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise _Problem(path, f"{path} must be a number, not {raw!r}")
    if not math.isfinite(raw):
        raise _Problem(path, f"{path} must be a finite number")
    return raw


def _split_quantity(raw: object, path: str) -> tuple[int | float, str | None]:
    """(number, unit text or None) of a number, ``{"value", "unit"}`` or text like ``"88 umol/L"``."""
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"value", "unit"}
        if unknown or "value" not in raw:
            raise _Problem(path, f'{path} must be a number or {{"value": number, "unit": text}}')
        unit = raw.get("unit")
        if unit is not None and not isinstance(unit, str):
            raise _Problem(path, f"{path}: the unit must be text", UnitError)
        return _number(raw["value"], path), unit
    if isinstance(raw, str):
        match = _NUMBER_WITH_UNIT.match(raw)
        if match is None:
            raise _Problem(path, f"{path} must be a number (optionally followed by a unit), not {raw!r}")
        return float(match.group(1)), match.group(2) or None
    return _number(raw, path), None


def _check_hard_limits(item: Item, path: str, number: float, shown: str) -> None:
    limits = item.hard_limits
    if limits is None:
        return
    unit = f" {item.unit}" if item.unit else ""
    if limits.min is not None and number < limits.min:
        raise _Problem(path, f"{path} {shown} is below the hard limit {limits.min:g}{unit}", OutOfRange,
                       value=number, limit=limits.min)
    if limits.max is not None and number > limits.max:
        raise _Problem(path, f"{path} {shown} is above the hard limit {limits.max:g}{unit}", OutOfRange,
                       value=number, limit=limits.max)


def _soft_limit_finding(item: Item, path: str, number: float) -> Finding | None:
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


def _parse_value(item: Item, path: str, raw: object, codelists: Mapping[str, tuple[str, ...]]) -> EnteredValue:
    kind = item.type
    if kind == "quantity":
        number, unit = _split_quantity(raw, path)
        value, entered_unit = to_primary_unit(item, float(number), unit, path=path)
        shown = f"{number:g} {entered_unit}" + (f" (= {value:g} {item.unit})" if entered_unit != item.unit else "")
        _check_hard_limits(item, path, value, shown)
        return EnteredValue(path, kind, number, entered_unit, value, item.unit)
    if kind == "integer":
        number = float(raw) if isinstance(raw, str) and re.fullmatch(r"\s*[-+]?\d+\s*", raw) else raw
        number = float(_number(number, path))
        if not number.is_integer():
            raise _Problem(path, f"{path} must be a whole number, not {number:g}")
        _check_hard_limits(item, path, number, f"{int(number)}")
        return EnteredValue(path, kind, int(number), None, int(number), None)
    if kind == "text":
        if not isinstance(raw, str):
            raise _Problem(path, f"{path} must be text")
        return EnteredValue(path, kind, raw, None, raw.strip(), None)
    if kind == "date":
        return _date_value(path, raw)
    if kind == "datetime":
        return _datetime_value(path, raw)
    if kind == "boolean":
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            raw = raw.strip().lower() in _TRUE
        if not isinstance(raw, bool):
            raise _Problem(path, f"{path} must be true or false")
        return EnteredValue(path, kind, raw, None, raw, None)
    if kind == "code":
        return EnteredValue(path, kind, raw, None, _code(path, raw, codelists[item.codelist or ""]), None)
    if kind == "code_list":
        if isinstance(raw, str) or not isinstance(raw, Sequence):
            raise _Problem(path, f"{path} must be a list of codes (empty for none)")
        codes = tuple(_code(path, entry, codelists[item.codelist or ""]) for entry in raw)
        if len(set(codes)) != len(codes):
            raise _Problem(path, f"{path} lists a code more than once")
        return EnteredValue(path, kind, codes, None, codes, None)
    raise _Problem(path, f"{path} has type {kind}, which holds no value of its own")  # pragma: no cover


def _date_value(path: str, raw: object) -> EnteredValue:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return EnteredValue(path, "date", raw, None, raw, None)
    if isinstance(raw, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw.strip()):
        try:
            parsed = date.fromisoformat(raw.strip())
        except ValueError:
            raise _Problem(path, f"{path}: '{raw}' is not a calendar date") from None
        return EnteredValue(path, "date", raw.strip(), None, parsed, None)
    raise _Problem(path, f"{path} must be a date YYYY-MM-DD")


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
    raise _Problem(path, f"{path} must be a date and time YYYY-MM-DDTHH:MM[:SS][+HH:MM]")


def _code(path: str, raw: object, codes: tuple[str, ...]) -> str:
    if not isinstance(raw, str):
        raise _Problem(path, f"{path} must be one of the codes {', '.join(codes)}")
    if raw not in codes:
        close = [code for code in codes if code.casefold() == raw.casefold()] or difflib.get_close_matches(raw, codes, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise _Problem(path, f"{path}: '{raw}' is not one of the codes {', '.join(codes)}{hint}")
    return raw


def _missing_reason(raw: object) -> str | None:
    if isinstance(raw, Mapping) and set(raw) == {"missing_reason"}:
        reason = raw["missing_reason"]
        if isinstance(reason, str) and reason.strip():
            return reason.strip()
    return None


# ------------------------------------------------------------------------------------------------
# The form


def validate_form(protocol: Protocol, form_id: str, submission: Mapping[str, object]) -> FormEntry:
    """Check one submission of ``form_id``: refuse bad values (every problem listed), normalize the
    rest, and report findings and missing required items (see the module docstring)."""
    form = protocol.form(form_id)
    if not isinstance(submission, Mapping):
        raise InvalidInput(f"a submission of form '{form_id}' must be an object of item ids to values",
                           field=form_id)
    codelists = {codelist.id: codelist.codes for codelist in protocol.codelists}
    values: dict[str, EnteredValue] = {}
    problems: list[_Problem] = []
    findings: list[Finding] = []
    missing: list[str] = []
    _walk(form.items, submission, "", codelists, values, problems, findings, missing)
    if not problems:
        _compute(form, values, problems, missing)

    if not problems:
        hard, soft = _edit_checks(protocol, form, values)
        problems.extend(hard)
        findings.extend(soft)
    if problems:
        first = problems[0]
        listed = [{"location": p.path, "message": p.message} for p in problems]
        raise first.family(
            f"form '{form_id}': {first.message}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            field=first.path,
            problems=listed,
            **first.details,
        )
    return FormEntry(form_id, values, tuple(findings), tuple(missing))


def _walk(
    items: Sequence[Item],
    submission: Mapping[str, object],
    prefix: str,
    codelists: Mapping[str, tuple[str, ...]],
    values: dict[str, EnteredValue],
    problems: list[_Problem],
    findings: list[Finding],
    missing: list[str],
) -> None:
    by_id = {item.id: item for item in items}
    for key in submission:
        if key not in by_id:
            path = f"{prefix}{key}"
            close = difflib.get_close_matches(str(key), list(by_id), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            problems.append(_Problem(path, f"{path} is not an item of this form{hint}"))
    for item in items:
        path = f"{prefix}{item.id}"
        raw = submission.get(item.id)
        if isinstance(raw, str) and not raw.strip() and item.type != "text":
            raw = None
        if raw is None:
            if item.required:
                missing.append(path)
            continue
        reason = _missing_reason(raw)
        if reason is not None:
            values[path] = EnteredValue(path, item.type, None, None, None, item.unit, missing_reason=reason)
            continue
        if item.type == "group":
            if not isinstance(raw, Mapping):
                problems.append(_Problem(path, f"{path} must be an object of its items"))
                continue
            _walk(item.items, raw, path + ".", codelists, values, problems, findings, missing)
            continue
        try:
            entered = _parse_value(item, path, raw, codelists)
        except _Problem as problem:
            problems.append(problem)
            continue
        except UnitError as error:
            problems.append(_Problem(path, error.message, UnitError, value=error.details.get("value")))
            continue
        values[path] = entered
        if isinstance(entered.value, (int, float)) and not isinstance(entered.value, bool):
            finding = _soft_limit_finding(item, path, float(entered.value))
            if finding is not None:
                findings.append(finding)


def _compute(form: Form, values: dict[str, EnteredValue], problems: list[_Problem], missing: list[str]) -> None:
    """Fill the form's computed items whose inputs are all given (an entered value must agree)."""
    known = {path: entry.value for path, entry in values.items() if entry.value is not None}
    for path, item in form.item_paths().items():
        if item.computed is None:
            continue
        outcome = compile_expression(item.computed).evaluate(known)
        if outcome.value is None:
            continue  # an input is missing: the value stays as entered, or absent
        number = float(outcome.value)
        if item.type == "integer":
            number = float(round(number))
        number = clean_number(number)
        try:
            _check_hard_limits(item, path, number, f"{number:g} (computed)")
        except _Problem as problem:
            problems.append(problem)
            continue
        entered = values.get(path)
        if entered is not None and entered.value is not None and entered.value != number:
            problems.append(_Problem(path, f"{path} {entered.value} disagrees with {number:g}, computed by the "
                                     f"protocol from {len(outcome.used)} item(s); leave it out to have it computed"))
            continue
        value: int | float = int(number) if item.type == "integer" else number
        values[path] = EnteredValue(path, item.type, value, item.unit, value, item.unit)
        known[path] = value
        if path in missing:
            missing.remove(path)


def computed_inputs(form: Form) -> dict[str, frozenset[str]]:
    """Each computed item of ``form`` with the item paths its expression reads."""
    return {path: compile_expression(item.computed).names for path, item in form.item_paths().items()
            if item.computed is not None}


def _edit_checks(protocol: Protocol, form: Form, values: Mapping[str, EnteredValue]) -> tuple[list[_Problem], list[Finding]]:
    """Run the form's edit checks; a check fires when its expression is false (never when unknown)."""
    checks = [check for check in protocol.edit_checks if check.form == form.id]
    if not checks:
        return [], []
    known = {path: entry.value for path, entry in values.items() if entry.value is not None}
    if form.id == protocol.screening_form and protocol.derived_values:
        known.update(_derived(protocol, values))
    hard: list[_Problem] = []
    soft: list[Finding] = []
    for check in checks:
        outcome = compile_expression(check.expression).evaluate(known)
        if outcome.value is None or bool(outcome.value):
            continue
        items = check.items or tuple(sorted(outcome.used))
        if check.severity == "hard":
            path = items[0] if items else form.id
            hard.append(_Problem(path, f"edit check {check.id}: {check.message}", check=check.id))
        else:
            soft.append(Finding("edit_check", tuple(items), check.message, check.id, dict(outcome.used)))
    return hard, soft


def _derived(protocol: Protocol, values: Mapping[str, EnteredValue]) -> dict[str, object]:
    """Derived values (age, CrCl, ...) for the screening form's edit checks, from the entered values."""
    from cmvtrial.core.derived_values import derive
    from cmvtrial.core.eligibility import derivation_parameters

    raw: dict[str, object] = {}
    for path, entry in values.items():
        if entry.value is None:
            continue
        if entry.type == "quantity":
            raw[path] = {"value": entry.value, "unit": entry.unit}
        else:
            raw[path] = entry.value
    for path in list(raw):  # groups as mappings, the shape the derivations read
        head, _, tail = path.partition(".")
        if tail:
            group = raw.setdefault(head, {})
            if isinstance(group, dict):
                value = raw[path]
                group[tail] = value["value"] if isinstance(value, dict) else value
    params = derivation_parameters(protocol)
    derived: dict[str, object] = {}
    for spec in protocol.derived_values:
        try:
            result = derive(spec.name, spec.method, spec.inputs, raw, params)
        except InvalidInput:
            continue  # a value the derivation cannot use is reported on its item, not here
        if result.value is not None:
            derived[spec.name] = result.value
    return derived
