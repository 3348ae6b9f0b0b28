"""Reading a hospital's FHIR R4 Bundle of lab Observations into plain lab results.

Why a strict reader: a malformed bundle must be refused whole, with every problem named, before
anything is imported (issue 8) — a half-understood message is worse than none. So the text must be
JSON, a ``Bundle``, valid against the R4B models of fhir.resources (which keep R4's Observation,
standards.md §4.3: unknown keys, a missing ``code`` or ``status`` fail there), and every Observation
must carry what cmvtrial needs and the models do not demand: a code that says something, an
effective date, and a value whose quantity names its unit (UCUM ``code``, else ``unit``). A result
coded only in a local system is not malformed: it is reported as an unknown code and not imported. A value below a limit
keeps its comparator (``<137 [IU]/mL``); "not detected" may be coded (SNOMED CT 260415000) or given
as text.

Observations that are ``entered-in-error`` or ``cancelled`` are left out; other resource types in the
bundle (a Patient, say) are ignored. Where each result then goes is the service's business
(services/lab_import.py).
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from cmvtrial.adapters.interop.terminology import LOINC, NOT_DETECTED
from cmvtrial.errors import InvalidInput
from cmvtrial.services.lab_import import LabResult

#: Observation statuses whose results are not results.
WITHDRAWN_STATUSES = ("entered-in-error", "cancelled")
_NOT_DETECTED_TEXT = ("not detected", "undetected", "negative", "target not detected")


def _problem(location: str, message: str) -> dict[str, str]:
    return {"location": location, "message": message}


def _refuse(message: str, problems: list[dict[str, str]]) -> InvalidInput:
    listed = "; ".join(f"{p['location']}: {p['message']}" for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return InvalidInput(f"{message}: {listed}{more}; nothing was imported", field="bundle", problems=problems)


def parse_bundle_text(text: str) -> dict[str, Any]:
    """The bundle as JSON, checked against the R4B models; InvalidInput lists every problem."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise InvalidInput(f"the file is not JSON ({error}); nothing was imported", field="bundle") from None
    if not isinstance(document, dict):
        raise InvalidInput("the file is not a FHIR resource (a JSON object with resourceType); nothing was imported",
                           field="bundle")
    kind = document.get("resourceType")
    if kind != "Bundle":
        raise InvalidInput(f"resourceType is {kind!r}: expected a FHIR 'Bundle' of Observations; nothing was imported",
                           field="resourceType", value=str(kind))
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    try:
        Bundle.model_validate(document)
    except ValidationError as error:
        problems = [_problem(".".join(str(p) for p in e.get("loc", ())), str(e.get("msg"))) for e in error.errors()]
        raise _refuse("the bundle is not valid FHIR R4", problems) from None
    except (KeyError, TypeError) as error:
        # fhir.resources itself trips over an empty or null resourceType in an entry (found by the
        # fuzzer, tests/reliability/corpus/fhir-resource-type-empty-or-null.json): still bad input.
        raise _refuse("the bundle is not valid FHIR R4",
                      [_problem("entry.resource.resourceType", f"not a FHIR resource type ({error!r})")]) from None
    return document


def _effective(resource: dict[str, Any]) -> str | None:
    for key in ("effectiveDateTime", "effectiveInstant"):
        if isinstance(resource.get(key), str):
            return str(resource[key])
    period = resource.get("effectivePeriod")
    if isinstance(period, dict) and isinstance(period.get("start"), str):
        return str(period["start"])
    return None


def _not_detected(resource: dict[str, Any]) -> bool:
    concept = resource.get("valueCodeableConcept")
    if isinstance(concept, dict):
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict) and coding.get("code") == NOT_DETECTED[0]:
                return True
        return str(concept.get("text", "")).strip().lower() in _NOT_DETECTED_TEXT
    if isinstance(resource.get("valueString"), str):
        return str(resource["valueString"]).strip().lower() in _NOT_DETECTED_TEXT
    return False


def lab_results(document: dict[str, Any]) -> list[LabResult]:
    """Every usable Observation of a validated bundle as a :class:`LabResult`; InvalidInput lists
    every Observation that lacks a LOINC code, a date, a value or a unit (nothing is imported)."""
    results: list[LabResult] = []
    problems: list[dict[str, str]] = []
    for index, entry in enumerate(document.get("entry") or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
            continue
        if resource.get("status") in WITHDRAWN_STATUSES:
            continue
        where = f"entry.{index}.resource"
        source_id = f"Observation/{resource.get('id') or index}"
        codings = [c for c in (resource.get("code") or {}).get("coding") or [] if isinstance(c, dict)]
        codes = tuple(str(c["code"]) for c in codings if c.get("system") == LOINC and c.get("code"))
        if not codings and not (resource.get("code") or {}).get("text"):
            problems.append(_problem(f"{where}.code", f"{source_id} has an empty code (no coding, no text)"))
        when = _effective(resource)
        effective: date | None = None
        if when is None:
            problems.append(_problem(f"{where}.effectiveDateTime", f"{source_id} has no effective date"))
        else:
            try:
                effective = date.fromisoformat(when[:10])
            except ValueError:
                problems.append(_problem(f"{where}.effectiveDateTime", f"{source_id}: {when!r} is not a date"))
        quantity = resource.get("valueQuantity")
        value = unit = comparator = None
        not_detected = False
        if isinstance(quantity, dict):
            unit = quantity.get("code") or quantity.get("unit")
            if quantity.get("value") is None:
                problems.append(_problem(f"{where}.valueQuantity.value", f"{source_id} has a quantity without a value"))
            elif not unit:
                problems.append(_problem(f"{where}.valueQuantity", f"{source_id}: value {quantity.get('value')} has "
                                                                   "no unit (UCUM code or unit)"))
            value = float(quantity["value"]) if quantity.get("value") is not None else None
            comparator = quantity.get("comparator")
        elif _not_detected(resource):
            not_detected = True
        else:
            problems.append(_problem(f"{where}.value[x]", f"{source_id} has no quantity value and is not a "
                                                           "'not detected' result"))
        if effective is not None and (value is not None and unit or not_detected):
            # A result without a LOINC code is kept: the service reports it as an unknown code.
            display = str((resource.get("code") or {}).get("text") or (codings[0].get("display") if codings else "")
                          or (codes[0] if codes else ""))
            results.append(LabResult(source_id, codes, display, effective, value, str(unit) if unit else None,
                                     str(comparator) if comparator else None, not_detected))
    if problems:
        raise _refuse("the bundle cannot be imported", problems)
    if not results:
        raise InvalidInput("the bundle holds no Observation to import; nothing was imported", field="bundle")
    return results


def read_bundle(text: str) -> list[LabResult]:
    """Parse, validate and extract (see the module docstring)."""
    return lab_results(parse_bundle_text(text))
