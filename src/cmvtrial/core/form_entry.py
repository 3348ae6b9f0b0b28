"""One form submission checked against the protocol's form definition: the EDC's entry rules.

Why one pure function for it (``validate_form``): the CLI's ``enter`` command, the API and the web
pages must apply exactly the same rules, and the data-capture service should only have to store what
comes back and open a query per finding. So everything the protocol says about an item is applied
here — its type, its codelist, the units it accepts (its own, one of its ``alternative_units`` with
the protocol's factor, or any unit of the same dimension, converted by pint), its hard limits, the
form's edit checks — and the result carries both the value *as entered* and the value *normalized*
to the item's primary unit, as CDISC ODM and the store keep them (DESIGN.md §2 "Forms like ODM").
One value's rules (type, codelist, units, limits) are in :mod:`cmvtrial.core.item_values`; this
module adds what spans the form: unknown keys, groups, computed items, edit checks, required items.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmvtrial.core.expressions import compile_expression
from cmvtrial.core.item_values import (
    EnteredValue,
    Finding,
    ItemProblem,
    check_hard_limits,
    missing_reason,
    parse_amount,
    parse_item_value,
    plain_value,
    soft_limit_finding,
    to_primary_unit,
)
from cmvtrial.core.units import clean_number
from cmvtrial.errors import InvalidInput, UnitError

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Form, Item, Protocol

#: One value's rules are in core/item_values.py; these are re-exported for the form's callers.
__all__ = [
    "EnteredValue", "Finding", "FormEntry", "clean_number", "computed_inputs", "parse_amount", "to_primary_unit",
    "validate_form",
]


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
            "values": {path: plain_value(entry.value) for path, entry in self.values.items()},
            "findings": [finding.to_dict() for finding in self.findings],
        }


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
    problems: list[ItemProblem] = []
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
    problems: list[ItemProblem],
    findings: list[Finding],
    missing: list[str],
) -> None:
    by_id = {item.id: item for item in items}
    for key in submission:
        if key not in by_id:
            path = f"{prefix}{key}"
            close = difflib.get_close_matches(str(key), list(by_id), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            problems.append(ItemProblem(path, f"{path} is not an item of this form{hint}"))
    for item in items:
        path = f"{prefix}{item.id}"
        raw = submission.get(item.id)
        if isinstance(raw, str) and not raw.strip() and item.type != "text":
            raw = None
        if raw is None:
            if item.required:
                missing.append(path)
            continue
        reason = missing_reason(raw)
        if reason is not None:
            values[path] = EnteredValue(path, item.type, None, None, None, item.unit, missing_reason=reason)
            continue
        if item.type == "group":
            if not isinstance(raw, Mapping):
                problems.append(ItemProblem(path, f"{path} must be an object of its items"))
                continue
            _walk(item.items, raw, path + ".", codelists, values, problems, findings, missing)
            continue
        try:
            entered = parse_item_value(item, path, raw, codelists)
        except ItemProblem as problem:
            problems.append(problem)
            continue
        except UnitError as error:
            problems.append(ItemProblem(path, error.message, UnitError, value=error.details.get("value")))
            continue
        values[path] = entered
        if isinstance(entered.value, (int, float)) and not isinstance(entered.value, bool):
            finding = soft_limit_finding(item, path, float(entered.value))
            if finding is not None:
                findings.append(finding)


def _compute(form: Form, values: dict[str, EnteredValue], problems: list[ItemProblem], missing: list[str]) -> None:
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
            check_hard_limits(item, path, number, f"{number:g} (computed)")
        except ItemProblem as problem:
            problems.append(problem)
            continue
        entered = values.get(path)
        if entered is not None and entered.value is not None and entered.value != number:
            problems.append(ItemProblem(path, f"{path} {entered.value} disagrees with {number:g}, computed by the "
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


def _edit_checks(protocol: Protocol, form: Form, values: Mapping[str, EnteredValue]) -> tuple[list[ItemProblem], list[Finding]]:
    """Run the form's edit checks; a check fires when its expression is false (never when unknown)."""
    checks = [check for check in protocol.edit_checks if check.form == form.id]
    if not checks:
        return [], []
    known = {path: entry.value for path, entry in values.items() if entry.value is not None}
    if form.id == protocol.screening_form and protocol.derived_values:
        known.update(_derived(protocol, values))
    hard: list[ItemProblem] = []
    soft: list[Finding] = []
    for check in checks:
        outcome = compile_expression(check.expression).evaluate(known)
        if outcome.value is None or bool(outcome.value):
            continue
        items = check.items or tuple(sorted(outcome.used))
        if check.severity == "hard":
            path = items[0] if items else form.id
            hard.append(ItemProblem(path, f"edit check {check.id}: {check.message}", check=check.id))
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
