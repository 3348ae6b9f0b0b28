"""A visit form as HTML fields, generated from the protocol, and its answers as a form submission.

Why generated (as the screening form is, screening_form.py): the protocol's form — items, types,
units and the alternative units it accepts, codelists, hard and soft limits — is the one description
of what a visit collects; the page shows exactly that, with each item's unit and limits beside it,
so a protocol amendment changes the page without code.

What a blank means here: a field left blank that holds no stored value is *not entered*; a field
emptied that held a stored value removes it (which, like any change of stored data, needs a reason).
The answers become the submission ``enter_visit_data`` takes (docs/treatment-and-visits.md), the
same JSON the CLI and the API send, so the three agree. Pure translation: no trial rule lives here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cmvtrial.adapters.web.form_answers import (
    UNIT_SUFFIX,
    Choice,
    first_answer,
    item_choices,
    item_units,
    parse_value,
    plain_number,
    shown,
)
from cmvtrial.adapters.web.rendering import display_unit
from cmvtrial.core.protocol import Item, Protocol


@dataclass(frozen=True)
class VisitField:
    """One item of a visit form; ``path`` (the item's dotted path) is the HTML field name."""

    form_id: str
    path: str
    label: str
    kind: str
    required: bool
    unit: str | None = None
    units: tuple[Choice, ...] = ()
    choices: tuple[Choice, ...] = ()
    hint: str = ""
    computed: bool = False
    children: tuple[VisitField, ...] = ()

    @property
    def html_id(self) -> str:
        return f"v-{self.form_id}-{self.path}".replace(".", "-").replace("_", "-")

    @property
    def unit_name(self) -> str:
        return self.path + UNIT_SUFFIX


@dataclass
class ParsedVisitForm:
    """The submission built from the answers, the raw answers (to show again) and per-field errors."""

    submission: dict[str, Any]
    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)


def visit_fields(protocol: Protocol, form_id: str) -> tuple[VisitField, ...]:
    form = protocol.form(form_id)
    codelists = {codelist.id: codelist for codelist in protocol.codelists}
    return tuple(_field(form_id, item, "", codelists) for item in form.items)


def field_names(fields: Sequence[VisitField]) -> set[str]:
    names: set[str] = set()
    for one in fields:
        names.add(one.path)
        names.update(child.path for child in one.children)
    return names


def flat(fields: Sequence[VisitField]) -> list[VisitField]:
    """Every answerable field, group members in place of their group."""
    return [child for one in fields for child in (one.children or (one,))]


def _field(form_id: str, item: Item, prefix: str, codelists: Mapping[str, Any]) -> VisitField:
    path = prefix + item.id
    return VisitField(
        form_id=form_id, path=path, label=item.display_label, kind=item.type, required=item.required,
        unit=item.unit, units=item_units(item), choices=item_choices(item, codelists), hint=limits_hint(item),
        computed=item.computed is not None,
        children=tuple(_field(form_id, child, path + ".", codelists) for child in item.items),
    )


def limits_hint(item: Item) -> str:
    """The item's limits as people read them: "allowed 1–500 kg · usually 30–150 kg"."""
    unit = f" {display_unit(item.unit)}" if item.unit else ""
    parts = []
    for word, limits in (("allowed", item.hard_limits), ("usually", item.soft_limits)):
        if limits is None or (limits.min is None and limits.max is None):
            continue
        if limits.min is not None and limits.max is not None:
            parts.append(f"{word} {plain_number(limits.min)}–{plain_number(limits.max)}{unit}")
        elif limits.min is not None:
            parts.append(f"{word} ≥ {plain_number(limits.min)}{unit}")
        else:
            parts.append(f"{word} ≤ {plain_number(limits.max)}{unit}")
    if item.computed is not None:
        parts.append("computed when every descriptor is answered")
    return " · ".join(parts)


# --------------------------------------------------------------------------------------------
# Stored values -> answers


def stored_answers(fields: Sequence[VisitField], stored: Mapping[str, Any]) -> dict[str, Any]:
    """The answers that show a stored form (``visit_data.visit_values``: value per item path)."""
    values: dict[str, Any] = {}
    for one in flat(fields):
        if one.path not in stored:
            continue
        value = stored[one.path]
        if isinstance(value, Mapping) and "missing_reason" in value:
            continue
        if one.kind == "quantity" and isinstance(value, Mapping):
            values[one.path] = shown(value.get("value"))
            values[one.unit_name] = str(value.get("unit") or one.unit or "")
        elif one.kind == "code_list":
            values[one.path] = list(value) if isinstance(value, (list, tuple)) else []
        else:
            values[one.path] = shown(value)
    return values


# --------------------------------------------------------------------------------------------
# Answers -> submission


def parse_visit_form(fields: Sequence[VisitField], form: Any, stored: Mapping[str, Any]) -> ParsedVisitForm:
    """The submission the answers give: a blank answer removes a stored value (``null``), and is
    left out when nothing is stored. ``form`` is a Starlette FormData or a multidict."""
    parsed = ParsedVisitForm(submission={}, values={})
    groups: dict[str, dict[str, Any]] = {}
    for one in flat(fields):
        head, dot, tail = one.path.partition(".")
        target = groups.setdefault(head, {}) if dot else parsed.submission
        key = tail if dot else one.path
        if one.kind == "code_list":
            chosen = [value for value in form.getlist(one.path) if isinstance(value, str) and value]
            parsed.values[one.path] = chosen
            if chosen:
                target[key] = chosen
            elif one.path in stored:
                target[key] = None
            continue
        raw = first_answer(form, one.path)
        parsed.values[one.path] = raw
        if one.kind == "quantity" and one.units:
            parsed.values[one.unit_name] = first_answer(form, one.unit_name) or one.units[0].code
        if raw == "":
            if one.path in stored:
                target[key] = None
            continue
        try:
            target[key] = parse_value(one, raw, parsed.values.get(one.unit_name), whole_numbers=True)
        except ValueError as problem:
            parsed.errors[one.path] = str(problem)
    for head, members in groups.items():
        if members:
            parsed.submission[head] = members
    return parsed
