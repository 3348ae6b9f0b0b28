"""The screening form as HTML fields, generated from the protocol, and its answers as a screening record.

Why generated: the protocol's screening form (items, types, units, alternative units, codelists,
limits) is the single description of what is asked; the page shows exactly that, so a protocol
amendment changes the page without code. The answers become the public screening record of
docs/screening-record.md, which the eligibility engine judges — the same record the CLI and the
API take, so all three agree.

What a blank means: a field left blank is *not entered* (the engine reports the criterion as
unknown), never "no". "No" is an explicit choice: the No radio for a yes/no item, "None of these"
for a list, "None taken" for a group such as the corticosteroid.

Pure translation: no rule about eligibility lives here.
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

NONE_OF_THESE = "__none__"
GROUP_NONE, GROUP_GIVEN = "none", "given"


@dataclass(frozen=True)
class FormField:
    """One question of the form; ``path`` is the item's dotted path and the HTML field name."""

    path: str
    label: str
    kind: str
    required: bool
    unit: str | None = None
    units: tuple[Choice, ...] = ()
    choices: tuple[Choice, ...] = ()
    hint: str = ""
    children: tuple[FormField, ...] = ()
    description: str = ""

    @property
    def html_id(self) -> str:
        return "f-" + self.path.replace(".", "-").replace("_", "-")

    @property
    def unit_name(self) -> str:
        return self.path + UNIT_SUFFIX


@dataclass
class ParsedForm:
    """The record built from the answers, the raw answers (to show again) and per-field errors."""

    record: dict[str, Any]
    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)


def screening_fields(protocol: Protocol) -> tuple[FormField, ...]:
    codelists = {codelist.id: codelist for codelist in protocol.codelists}
    return tuple(_field(item, "", codelists, top=True) for item in protocol.screening.items)


def field_paths(fields: Sequence[FormField]) -> set[str]:
    paths: set[str] = set()
    for one in fields:
        paths.add(one.path)
        paths.update(child.path for child in one.children)
    return paths


def _field(item: Item, prefix: str, codelists: Mapping[str, Any], *, top: bool) -> FormField:
    path = prefix + item.id
    children = tuple(_field(child, path + ".", codelists, top=False) for child in item.items)
    return FormField(
        path=path,
        label=item.display_label,
        kind=item.type,
        required=item.required,
        unit=item.unit,
        units=item_units(item, alternatives=top),  # a group member is entered in its own unit
        choices=item_choices(item, codelists),
        hint=_hint(item),
        children=children,
        description=item.description or "",
    )


def _hint(item: Item) -> str:
    soft = item.soft_limits
    if soft is None or (soft.min is None and soft.max is None):
        return ""
    unit = f" {display_unit(item.unit)}" if item.unit else ""
    if soft.min is not None and soft.max is not None:
        return f"usually {plain_number(soft.min)}–{plain_number(soft.max)}{unit}"
    if soft.min is not None:
        return f"usually at least {plain_number(soft.min)}{unit}"
    return f"usually at most {plain_number(soft.max)}{unit}"


# --------------------------------------------------------------------------------------------
# Answers -> record


def parse_answers(fields: Sequence[FormField], form: Any) -> ParsedForm:
    """The screening record the answers give (``form`` is a Starlette FormData or a multidict)."""
    parsed = ParsedForm(record={}, values={})
    for one in fields:
        _take(one, form, parsed)
    return parsed


def _take(one: FormField, form: Any, parsed: ParsedForm) -> None:
    if one.kind == "group":
        _take_group(one, form, parsed)
        return
    if one.kind == "code_list":
        chosen = [value for value in form.getlist(one.path) if isinstance(value, str)]
        parsed.values[one.path] = chosen
        if NONE_OF_THESE in chosen and len(chosen) > 1:
            parsed.errors[one.path] = "choose either “None of these” or the ones that apply, not both"
        elif NONE_OF_THESE in chosen:
            parsed.record[one.path] = []
        elif chosen:
            parsed.record[one.path] = chosen
        return
    raw = first_answer(form, one.path)
    parsed.values[one.path] = raw
    if one.kind == "quantity" and one.units:
        parsed.values[one.unit_name] = first_answer(form, one.unit_name) or one.units[0].code
    if raw == "":
        return
    try:
        parsed.record[one.path] = parse_value(one, raw, parsed.values.get(one.unit_name))
    except ValueError as problem:
        parsed.errors[one.path] = str(problem)


def _take_group(one: FormField, form: Any, parsed: ParsedForm) -> None:
    presence = first_answer(form, one.path)
    parsed.values[one.path] = presence
    children: dict[str, Any] = {}
    for child in one.children:
        raw = first_answer(form, child.path)
        parsed.values[child.path] = raw
        if raw == "":
            continue
        try:
            children[child.path.rpartition(".")[2]] = parse_value(child, raw, None)
        except ValueError as problem:
            parsed.errors[child.path] = str(problem)
    if presence == GROUP_NONE:
        if children:
            parsed.errors[one.path] = "you chose “None taken” but filled in the details; clear one of them"
        else:
            parsed.record[one.path] = None
    elif presence == GROUP_GIVEN or children:
        parsed.record[one.path] = children


# --------------------------------------------------------------------------------------------
# Record -> answers (a stored screening record shown in the form again)


def record_values(fields: Sequence[FormField], record: Mapping[str, Any]) -> dict[str, Any]:
    """The form's answers for a screening record (the inverse of ``parse_answers``), so a stored
    record can be shown, corrected and saved again."""
    values: dict[str, Any] = {}
    for one in fields:
        if one.path not in record:
            continue
        value = record[one.path]
        if one.kind == "group":
            if value is None:
                values[one.path] = GROUP_NONE
                continue
            values[one.path] = GROUP_GIVEN
            for child in one.children:
                name = child.path.rpartition(".")[2]
                if isinstance(value, Mapping) and value.get(name) is not None:
                    values[child.path] = shown(value[name])
        elif one.kind == "code_list":
            values[one.path] = list(value) if value else [NONE_OF_THESE]
        elif one.kind == "quantity" and isinstance(value, Mapping):
            values[one.path] = shown(value.get("value"))
            values[one.unit_name] = str(value.get("unit") or (one.units[0].code if one.units else ""))
        else:
            values[one.path] = shown(value)
    return values
