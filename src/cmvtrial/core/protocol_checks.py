"""Checks that relate one part of a protocol to another, each problem with its path in the file.

Why separate from the models: a pydantic model sees one part at a time, and an error raised on the
whole protocol has no location. These checks run on the protocol as plain data (the parsed YAML,
or a model's dump), so they also run when some other part of the file failed validation — the
author gets every problem in one pass, each with a path the parser turns into a line number.

What is checked: duplicate ids; every name an expression reads exists (screening items and derived
values for criteria, the form's items for edit checks and dose holds); text literals compared with a
coded item are codes of its codelist; references to forms, visits, arms and codelists exist; derived
values have inputs of the right type; the randomization ratio names exactly the arms; the steroid
table covers every corticosteroid code; the CMV item agrees with the assay on unit and IU factor.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cmvtrial.core import units
from cmvtrial.core.expressions import compile_expression
from cmvtrial.core.protocol_fields import DERIVATION_METHODS
from cmvtrial.errors import InvalidInput

Path = tuple[str | int, ...]

#: The item types each derived-value method accepts for each of its inputs.
_DERIVED_INPUT_TYPES = {method: tuple(types for _, types in spec) for method, spec in DERIVATION_METHODS.items()}
#: The factor name that needs no item: allocation lists are kept per site.
SITE = "site"


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str

    @property
    def dotted_path(self) -> str:
        return ".".join(str(part) for part in self.path) or "(top)"


def _entries(data: Any, key: str) -> Iterator[tuple[int, dict[str, Any]]]:
    value = data.get(key) if isinstance(data, Mapping) else None
    if isinstance(value, (list, tuple)):
        for index, entry in enumerate(value):
            if isinstance(entry, Mapping):
                yield index, dict(entry)


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _text(entry: Mapping[str, Any], key: str) -> str | None:
    value = entry.get(key)
    return value if isinstance(value, str) else None


def _canonical(unit: Any) -> str | None:
    try:
        return units.canonical_unit(unit) if isinstance(unit, str) else None
    except InvalidInput:
        return None


def _suggest(name: str, candidates: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Checker:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.problems: list[Problem] = []
        # form id -> {dotted item path: (item data, path in file)}
        self.forms: dict[str, dict[str, tuple[dict[str, Any], Path]]] = {}
        for f, form in _entries(data, "forms"):
            form_id = _text(form, "id")
            if form_id is not None and form_id not in self.forms:
                self.forms[form_id] = dict(self._walk_items(form, ("forms", f), ""))
        self.codelists: dict[str, list[str]] = {}
        for _, codelist in _entries(data, "codelists"):
            codelist_id = _text(codelist, "id")
            if codelist_id is not None and codelist_id not in self.codelists:
                self.codelists[codelist_id] = [
                    code for _, entry in _entries(codelist, "items") if (code := _text(entry, "code"))
                ]
        self.screening_id = _text(data, "screening_form") or "screening"
        self.screening = self.forms.get(self.screening_id, {})
        self.derived = {
            name: value for _, value in _entries(data, "derived_values") if (name := _text(value, "name"))
        }

    def _walk_items(self, parent: dict[str, Any], path: Path, prefix: str) -> Iterator[tuple[str, Any]]:
        for i, item in _entries(parent, "items"):
            item_id = _text(item, "id")
            if item_id is None:
                continue
            item_path = (*path, "items", i)
            yield prefix + item_id, (item, item_path)
            yield from self._walk_items(item, item_path, prefix + item_id + ".")

    def add(self, path: Path, message: str) -> None:
        self.problems.append(Problem(path, message))

    # ------------------------------------------------------------------------------------------
    def run(self) -> list[Problem]:
        self.check_duplicates()
        self.check_forms_and_codelists()
        self.check_derived_values()
        self.check_expressions()
        self.check_references()
        self.check_randomization()
        self.check_constants()
        return self.problems

    def _unique(self, entries: Iterator[tuple[int, dict[str, Any]]], key: str, where: Path, label: str) -> None:
        seen: dict[str, int] = {}
        for index, entry in entries:
            value = _text(entry, key)
            if value is None:
                continue
            if value in seen:
                self.add((*where, index, key), f"duplicate {label} '{value}' (first at {seen[value]})")
            else:
                seen[value] = index

    def check_duplicates(self) -> None:
        data = self.data
        sections = [
            ("arms", "id", "arm id"), ("eligibility", "id", "criterion id"), ("visits", "code", "visit code"),
            ("forms", "id", "form id"), ("codelists", "id", "codelist id"), ("edit_checks", "id", "edit check id"),
            ("endpoints", "id", "endpoint id"), ("derived_values", "name", "derived value name"),
        ]
        for section, key, label in sections:
            self._unique(_entries(data, section), key, (section,), label)
        for f, form in _entries(data, "forms"):
            self._unique(_entries(form, "items"), "id", ("forms", f, "items"), "item id")
            for i, item in _entries(form, "items"):
                self._unique(_entries(item, "items"), "id", ("forms", f, "items", i, "items"), "item id")
        for c, codelist in _entries(data, "codelists"):
            self._unique(_entries(codelist, "items"), "code", ("codelists", c, "items"), "code")
        for a, arm in _entries(data, "arms"):
            for r, regimen in _entries(arm, "regimens"):
                self._unique(_entries(regimen, "holds"), "id", ("arms", a, "regimens", r, "holds"), "hold id")
        randomization = self.data.get("randomization")
        if isinstance(randomization, Mapping):
            for section in ("strata", "factors"):
                named = [(i, {"name": v} if isinstance(v, str) else v) for i, v in enumerate(_list(randomization.get(section)))]
                self._unique(iter([(i, e) for i, e in named if isinstance(e, Mapping)]), "name",
                             ("randomization", section), "factor")

    def check_forms_and_codelists(self) -> None:
        for form_id, items in self.forms.items():
            for item_path, (item, path) in items.items():
                codelist = _text(item, "codelist")
                if codelist is not None and codelist not in self.codelists:
                    self.add((*path, "codelist"), f"item '{item_path}' of form '{form_id}' names unknown "
                             f"codelist '{codelist}'{_suggest(codelist, set(self.codelists))}")
        if self.screening_id not in self.forms:
            self.add(("screening_form",), f"screening form '{self.screening_id}' is not among the forms")

    def check_derived_values(self) -> None:
        for d, value in _entries(self.data, "derived_values"):
            name = _text(value, "name")
            if name is not None and name in self.screening:
                self.add((("derived_values", d, "name")), f"derived value '{name}' has the name of a screening item")
            expected = _DERIVED_INPUT_TYPES.get(_text(value, "method") or "", ())
            for k, source in enumerate(_list(value.get("inputs"))):
                if not isinstance(source, str):
                    continue
                found = self.screening.get(source)
                if found is None:
                    self.add(("derived_values", d, "inputs", k), f"input '{source}' of derived value '{name}' "
                             f"is not an item of form '{self.screening_id}'{_suggest(source, set(self.screening))}")
                elif k < len(expected) and found[0].get("type") not in expected[k]:
                    self.add(("derived_values", d, "inputs", k), f"input '{source}' of derived value '{name}' "
                             f"is a {found[0].get('type')} item; method needs {' or '.join(expected[k])}")

    # expressions ------------------------------------------------------------------------------
    def _expression(self, text: Any, path: Path, items: dict[str, tuple[dict[str, Any], Path]],
                    extra: set[str], scope: str) -> None:
        if not isinstance(text, str):
            return
        try:
            compiled = compile_expression(text)
        except InvalidInput:
            return  # the model reports a syntax error at the same place
        known = set(items) | extra
        for name in sorted(compiled.names - known):
            self.add(path, f"expression names '{name}', which is not {scope}{_suggest(name, known)}")
        for name, literal in compiled.name_literals():
            item = items.get(name, ({}, ()))[0]
            codes = self.codelists.get(_text(item, "codelist") or "")
            if codes is not None and literal not in codes:
                self.add(path, f"'{literal}' is not a code of codelist '{item.get('codelist')}' "
                         f"used by '{name}' (codes: {', '.join(codes)})")

    def check_expressions(self) -> None:
        screening_scope = f"an item of form '{self.screening_id}' or a derived value"
        derived = set(self.derived)
        for c, criterion in _entries(self.data, "eligibility"):
            self._expression(criterion.get("expression"), ("eligibility", c, "expression"),
                             self.screening, derived, screening_scope)
        for e, check in _entries(self.data, "edit_checks"):
            form_id = _text(check, "form")
            if form_id not in self.forms:
                self.add(("edit_checks", e, "form"), f"edit check names unknown form '{form_id}'"
                         f"{_suggest(form_id or '', set(self.forms))}")
                continue
            extra = derived if form_id == self.screening_id else set()
            items = self.forms[form_id]
            self._expression(check.get("expression"), ("edit_checks", e, "expression"), items, extra,
                             f"an item of form '{form_id}'")
            for k, flagged in enumerate(_list(check.get("items"))):
                if isinstance(flagged, str) and flagged not in items:
                    self.add(("edit_checks", e, "items", k), f"'{flagged}' is not an item of form '{form_id}'")
        for form_id, items in self.forms.items():
            for item_path, (item, path) in items.items():
                if item.get("computed") is not None:
                    others = {name: found for name, found in items.items() if name != item_path}
                    self._expression(item.get("computed"), (*path, "computed"), others, set(),
                                     f"another item of form '{form_id}'")
        for a, arm in _entries(self.data, "arms"):
            for r, regimen in _entries(arm, "regimens"):
                for h, hold in _entries(regimen, "holds"):
                    path: Path = ("arms", a, "regimens", r, "holds", h)
                    form_id = _text(hold, "form")
                    if form_id not in self.forms:
                        self.add((*path, "form"), f"hold names unknown form '{form_id}'")
                        continue
                    self._expression(hold.get("expression"), (*path, "expression"), self.forms[form_id],
                                     set(), f"an item of form '{form_id}'")

    # references -------------------------------------------------------------------------------
    def check_references(self) -> None:
        for v, visit in _entries(self.data, "visits"):
            for k, form_id in enumerate(_list(visit.get("forms"))):
                if isinstance(form_id, str) and form_id not in self.forms:
                    self.add(("visits", v, "forms", k), f"visit '{visit.get('code')}' names unknown form "
                             f"'{form_id}'{_suggest(form_id, set(self.forms))}")
        visit_codes = {code for _, visit in _entries(self.data, "visits") if (code := _text(visit, "code"))}
        for e, endpoint in _entries(self.data, "endpoints"):
            for k, measure in enumerate(_list(endpoint.get("measures"))):
                form_id, _, item_path = str(measure).partition(".")
                if item_path not in self.forms.get(form_id, {}):
                    self.add(("endpoints", e, "measures", k), f"measure '{measure}' is not form_id.item_id "
                             "of an existing item")
            for k, code in enumerate(_list(endpoint.get("visits"))):
                if isinstance(code, str) and code not in visit_codes:
                    self.add(("endpoints", e, "visits", k), f"endpoint names unknown visit '{code}'"
                             f"{_suggest(str(code), visit_codes)}")

    def check_randomization(self) -> None:
        randomization = self.data.get("randomization")
        if not isinstance(randomization, Mapping):
            return
        arm_ids = {arm_id for _, arm in _entries(self.data, "arms") if (arm_id := _text(arm, "id"))}
        ratio = randomization.get("ratio")
        if isinstance(ratio, Mapping):
            for key in ratio:
                if key not in arm_ids:
                    self.add(("randomization", "ratio", key), f"ratio names unknown arm '{key}'"
                             f"{_suggest(str(key), arm_ids)}")
            for arm_id in sorted(arm_ids - set(ratio)):
                self.add(("randomization", "ratio"), f"ratio gives no share to arm '{arm_id}'")
        derived = set(self.derived)
        for section in ("strata", "factors"):
            for f, factor in enumerate(_list(randomization.get(section))):
                factor = {"name": factor} if isinstance(factor, str) else factor
                if not isinstance(factor, Mapping):
                    continue
                self._check_factor(factor, ("randomization", section, f), derived)

    def _check_factor(self, factor: Mapping[str, Any], path: Path, derived: set[str]) -> None:
        name = _text(factor, "name")
        levels = _list(factor.get("levels"))
        for l, level in enumerate(levels):
            if isinstance(level, Mapping):
                self._expression(level.get("expression"), (*path, "levels", l, "expression"), self.screening,
                                 derived, f"an item of form '{self.screening_id}' or a derived value")
        if name is None or name == SITE:
            return
        item = self.screening.get(name)
        if item is None and name not in derived:
            self.add((*path, "name"), f"factor '{name}' is not 'site', a screening item or a derived value"
                     f"{_suggest(name, set(self.screening) | derived | {SITE})}")
        elif not levels and (item is None or item[0].get("type") not in ("code", "boolean")):
            self.add((*path, "levels"), f"factor '{name}' needs levels (only 'site', code and boolean "
                     "items have them implicitly)")

    # constants --------------------------------------------------------------------------------
    def check_constants(self) -> None:
        derivations = self.data.get("derivations")
        derivations = derivations if isinstance(derivations, Mapping) else {}
        for d, value in _entries(self.data, "derived_values"):
            inputs = [i for i in _list(value.get("inputs")) if isinstance(i, str)]
            method = value.get("method")
            if method == "prednisone_equivalent_per_kg" and inputs:
                self._check_steroid_table(inputs[0], derivations.get("prednisone_equivalence"))
            elif method == "cmv_copies_per_ml" and inputs:
                self._check_cmv_item(inputs[0], d)
            elif method == "cockcroft_gault" and len(inputs) == 5:
                clearance = derivations.get("creatinine_clearance")
                wanted = _canonical(clearance.get("serum_creatinine_unit")) if isinstance(clearance, Mapping) else None
                self._check_unit_reachable(inputs[4], wanted, ("derived_values", d, "inputs", 4))

    def _check_steroid_table(self, group_path: str, table: Any) -> None:
        if not isinstance(table, Mapping):
            return
        for child_path, (child, _) in self.screening.items():
            if child_path.startswith(group_path + ".") and child.get("type") == "code":
                for code in self.codelists.get(_text(child, "codelist") or "", []):
                    if code not in table:
                        self.add(("derivations", "prednisone_equivalence"),
                                 f"no prednisone factor for corticosteroid code '{code}'")

    def _check_unit_reachable(self, item_path: str, wanted: str | None, path: Path) -> None:
        found = self.screening.get(item_path)
        if found is None or wanted is None:
            return
        item = found[0]
        primary = _canonical(item.get("unit"))
        alternatives = {_canonical(alt.get("unit")) for _, alt in _entries(item, "alternative_units")}
        if primary is None or wanted == primary or wanted in alternatives:
            return
        if not units.are_compatible(primary, wanted):
            self.add(path, f"item '{item_path}' in {primary} cannot be expressed in {wanted}, "
                     "the unit the formula's constants assume")

    def _check_cmv_item(self, item_path: str, index: int) -> None:
        found = self.screening.get(item_path)
        assay = self.data.get("assay")
        cmv = assay.get("cmv_dna") if isinstance(assay, Mapping) else None
        if found is None or not isinstance(cmv, Mapping):
            return
        item, path = found
        primary = _canonical(cmv.get("primary_unit"))
        if primary is not None and _canonical(item.get("unit")) not in (primary, None):
            self.add((*path, "unit"), f"item '{item_path}' is in {item.get('unit')} but the assay reports "
                     f"{cmv.get('primary_unit')}")
        factor = cmv.get("iu_to_copies_factor")
        for a, alternative in _entries(item, "alternative_units"):
            if _canonical(alternative.get("unit")) == "[IU]/mL" and alternative.get("factor") != factor:
                self.add((*path, "alternative_units", a, "factor"), f"IU/mL factor {alternative.get('factor')} "
                         f"differs from the assay's iu_to_copies_factor {factor}")


def cross_problems(data: Mapping[str, Any]) -> list[Problem]:
    """Every cross-part problem of a protocol given as plain data (parsed YAML or a model dump)."""
    if not isinstance(data, Mapping):
        return []
    return _Checker(data).run()
