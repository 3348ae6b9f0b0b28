"""FHIR R4 export of one subject: a Bundle a hospital or registry system can read.

What the Bundle (``type: collection``) holds, each resource shaped as FHIR 4.0.1 defines it and
checked by parsing with the R4B models of fhir.resources (R4B keeps R4's Observation,
ResearchStudy and ResearchSubject; standards.md §4.3) before it is returned:

- **Patient**: the pseudonym only (identifier and id), and the administrative gender; no name, no
  date of birth (pseudonymized export, services/export_data.py).
- **ResearchStudy** (the protocol: title, registry identifiers, condition, arms) and
  **ResearchSubject** (status from the subject's status — ``withdrawn`` for a withdrawal,
  ``off-study`` once completed, lost to follow-up or dead —, assigned and actual arm, period from
  consent to the end of study).
- **Observation** per stored numeric value of an item with a LOINC code or an SDTM test code: LOINC
  coding (else a cmvtrial item code), the value in the item's unit as UCUM (standards.md §4.1),
  the effective date of the sample, the paired ULN as reference range; a CMV-DNA result below the
  assay's limit is ``valueQuantity`` with comparator ``<`` at the limit, one not detected is SNOMED CT
  260415000 "Not detected"; a value recorded as not done carries its dataAbsentReason text.
- **MedicationAdministration** per dose given (``completed``) or held/missed (``not-done`` with the
  reason), dose and route.
- **AdverseEvent** per event: MedDRA-coded CTCAE term, CTCAE grade as severity text, seriousness,
  outcome, and each study drug's causality as a suspect entity.

Resource ids and ``fullUrl`` values are deterministic (UUID v5 of study, type and record), so the
same subject exported twice gives the same bundle apart from its timestamp.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from cmvtrial.adapters.interop.sdtm_records import number_text
from cmvtrial.adapters.interop.terminology import (
    AE_OUTCOME,
    AE_SERIOUSNESS,
    FHIR_AE_OUTCOME,
    LOINC,
    MEDDRA,
    NOT_DETECTED,
    OBSERVATION_CATEGORY,
    SNOMED,
    UCUM,
    fhir_unit,
)
from cmvtrial.core import units
from cmvtrial.core.schedule import DETECTED_BELOW_LLOQ
from cmvtrial.core.schedule import NOT_DETECTED as NOT_DETECTED_CATEGORY
from cmvtrial.errors import CmvtrialError, InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.services.export_data import ExportData, ExportSubject

ITEM_SYSTEM = "urn:cmvtrial:item"
_STATUS = {"screening": "screening", "screen_failed": "ineligible", "eligible": "eligible", "randomized": "on-study",
           "on_treatment": "on-study-intervention", "in_follow_up": "follow-up", "completed": "off-study",
           "withdrawn": "withdrawn", "lost_to_follow_up": "off-study", "died": "off-study"}
_GENDER = {"F": "female", "M": "male"}
_NAMESPACE = uuid.UUID("6f0f7c55-6e0b-4c1e-9d0a-2f6d1c3b8a10")


def _uuid(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


class _Bundle:
    def __init__(self, data: ExportData) -> None:
        self.data = data
        self.entries: list[dict[str, Any]] = []

    def add(self, resource: dict[str, Any]) -> str:
        url = f"urn:uuid:{resource['id']}"
        self.entries.append({"fullUrl": url, "resource": resource})
        return url


def _quantity(value: float, unit: str | None) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": float(number_text(value))}
    if unit:
        quantity.update({"unit": unit, "system": UCUM, "code": fhir_unit(unit)})
    return quantity


def export_subject_bundle(data: ExportData, subject_key: int) -> dict[str, Any]:
    """The Bundle of one subject (see the module docstring), validated against the R4B models."""
    subject = data.subject(subject_key)
    bundle = _Bundle(data)
    study = data.study_id
    protocol = data.protocol
    screening = {v.item: v for v in data.values_of(subject.key) if v.form == protocol.screening_form}
    sex = next((v.text for path, v in screening.items()
                if (item := protocol.item(protocol.screening_form, path)).sdtm is not None
                and item.sdtm.variable == "SEX"), None)
    patient_id = _uuid(study, "Patient", subject.subject_id)
    patient = {"resourceType": "Patient", "id": patient_id,
               "identifier": [{"system": f"urn:cmvtrial:{study.lower()}:pseudonym", "value": subject.subject_id}]}
    if sex in _GENDER:
        patient["gender"] = _GENDER[sex]
    patient_ref = {"reference": bundle.add(patient)}
    study_id = _uuid(study, "ResearchStudy")
    research_study: dict[str, Any] = {
        "resourceType": "ResearchStudy", "id": study_id, "title": protocol.title, "status": "active",
        "identifier": [{"system": f"urn:cmvtrial:registry:{entry.registry}", "value": entry.id}
                       for entry in protocol.registry_ids],
        "condition": [{"text": protocol.population.condition}],
        "arm": [{"name": arm.id, "description": arm.label} for arm in protocol.arms]}
    study_ref = {"reference": bundle.add(research_study)}
    research_subject: dict[str, Any] = {
        "resourceType": "ResearchSubject", "id": _uuid(study, "ResearchSubject", subject.subject_id),
        "status": _STATUS.get(subject.status, "on-study"), "study": study_ref, "individual": patient_ref,
        "identifier": [{"system": f"urn:cmvtrial:{study.lower()}:pseudonym", "value": subject.subject_id}]}
    if subject.arm:
        research_subject["assignedArm"] = subject.arm
    if subject.arm_received:
        research_subject["actualArm"] = subject.arm_received
    if subject.consent_date:
        research_subject["period"] = {"start": subject.consent_date.isoformat()}
        if subject.end_of_study_date:
            research_subject["period"]["end"] = subject.end_of_study_date.isoformat()
    bundle.add(research_subject)
    _observations(bundle, subject, patient_ref)
    _administrations(bundle, subject, patient_ref)
    _adverse_events(bundle, subject, patient_ref, study_ref)
    document = {"resourceType": "Bundle", "id": _uuid(study, "Bundle", subject.subject_id), "type": "collection",
                "timestamp": data.generated_at.isoformat(), "entry": bundle.entries}
    validate_bundle(document)
    return document


def validate_bundle(document: dict[str, Any]) -> None:
    """Parse ``document`` with the R4B models; InvalidInput names the first problem."""
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    try:
        Bundle.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInput(f"the FHIR bundle does not validate: {where}: {first.get('msg')}", field="bundle") from None


def _observations(bundle: _Bundle, subject: ExportSubject, patient_ref: dict[str, str]) -> None:
    from cmvtrial.services.visit_data import cmv_items, uln_items

    data, protocol = bundle.data, bundle.data.protocol
    cmv = cmv_items(protocol)
    ulns = uln_items(protocol)
    uln_paths = set(ulns.values())
    values = data.values_of(subject.key)
    by_instance: dict[int, dict[str, Any]] = defaultdict(dict)
    for value in values:
        by_instance[value.instance_id][value.item] = value
    for value in values:
        try:
            item = protocol.item(value.form, value.item)
        except CmvtrialError:
            continue
        if item.type not in ("quantity", "integer") or value.item in uln_paths:
            continue
        if item.loinc is None and (item.sdtm is None or not item.sdtm.testcd):
            continue
        siblings = by_instance[value.instance_id]
        coding = ({"system": LOINC, "code": item.loinc, "display": item.display_label} if item.loinc else
                  {"system": ITEM_SYSTEM, "code": f"{value.form}.{value.item}", "display": item.display_label})
        category = "vital-signs" if item.sdtm is not None and item.sdtm.domain == "VS" else "laboratory"
        observation: dict[str, Any] = {
            "resourceType": "Observation", "id": _uuid(data.study_id, "Observation", value.value_id),
            "identifier": [{"system": f"urn:cmvtrial:{data.study_id.lower()}:item-value", "value": str(value.value_id)}],
            "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}],
            "code": {"coding": [coding], "text": item.display_label}, "subject": patient_ref}
        if value.sample_date is not None:
            observation["effectiveDateTime"] = value.sample_date.isoformat()
        result = None
        if cmv is not None and value.form == cmv.form and value.item == cmv.load and cmv.category in siblings:
            result = siblings[cmv.category].text
        if result == NOT_DETECTED_CATEGORY:
            observation["valueCodeableConcept"] = {"coding": [{"system": SNOMED, "code": NOT_DETECTED[0],
                                                               "display": NOT_DETECTED[1]}], "text": "not detected"}
        elif result == DETECTED_BELOW_LLOQ:
            assay = protocol.assay.cmv_dna
            try:
                lloq = units.convert(assay.in_primary_unit(assay.lloq), assay.primary_unit, item.unit or assay.primary_unit)
            except CmvtrialError:
                lloq = assay.in_primary_unit(assay.lloq)
            observation["valueQuantity"] = {**_quantity(lloq, item.unit), "comparator": "<"}
        elif value.number is not None:
            observation["valueQuantity"] = _quantity(value.number, item.unit)
        elif value.missing_reason:
            observation["dataAbsentReason"] = {"text": value.missing_reason}
        else:
            continue
        uln = siblings.get(ulns.get(value.item, ""))
        if uln is not None and uln.number is not None:
            observation["referenceRange"] = [{"high": _quantity(uln.number, item.unit)}]
        bundle.add(observation)


def _administrations(bundle: _Bundle, subject: ExportSubject, patient_ref: dict[str, str]) -> None:
    data = bundle.data
    for dose in data.doses_of(subject.key):
        resource: dict[str, Any] = {
            "resourceType": "MedicationAdministration", "id": _uuid(data.study_id, "MedicationAdministration", dose.dose_id),
            "status": "completed" if dose.status == "given" else "not-done",
            "medicationCodeableConcept": {"text": dose.drug}, "subject": patient_ref,
            "effectiveDateTime": (dose.administered_at or dose.administered_on).isoformat()}
        if dose.status != "given":
            resource["statusReason"] = [{"text": dose.reason or dose.status}]
        dosage: dict[str, Any] = {}
        if dose.route:
            dosage["route"] = {"text": dose.route}
        if dose.dose is not None and dose.status == "given":
            try:
                unit = units.canonical_unit(dose.unit or "")
            except CmvtrialError:
                unit = None
            dosage["dose"] = _quantity(dose.dose, unit) if unit else {"value": dose.dose, "unit": dose.unit}
        if dosage:
            resource["dosage"] = dosage
        bundle.add(resource)


def _adverse_events(bundle: _Bundle, subject: ExportSubject, patient_ref: dict[str, str],
                    study_ref: dict[str, str]) -> None:
    data = bundle.data
    for event in data.adverse_events_of(subject.key):
        coding = [{"system": MEDDRA, "code": event.meddra_code, "display": event.ctcae_term or event.term}] \
            if event.meddra_code else []
        resource: dict[str, Any] = {
            "resourceType": "AdverseEvent", "id": _uuid(data.study_id, "AdverseEvent", event.event_id),
            "identifier": {"system": f"urn:cmvtrial:{data.study_id.lower()}:adverse-event",
                           "value": f"{subject.subject_id}-{event.number}"},
            "actuality": "actual", "subject": patient_ref, "date": event.onset_date.isoformat(),
            "event": {"coding": coding, "text": event.term} if coding else {"text": event.term},
            "seriousness": {"coding": [{"system": AE_SERIOUSNESS,
                                        "code": "serious" if event.serious else "non-serious"}]},
            "study": [study_ref]}
        if event.grade is not None:
            resource["severity"] = {"text": f"CTCAE v{event.ctcae_version or ''} grade {event.grade}".replace("v ", "")}
        if event.outcome in FHIR_AE_OUTCOME:
            resource["outcome"] = {"coding": [{"system": AE_OUTCOME, "code": FHIR_AE_OUTCOME[event.outcome]}],
                                   "text": event.outcome}
        suspects = []
        for assessment in event.drug_assessments:
            if assessment.get("relatedness") in (None, "not_applicable"):
                continue
            suspects.append({"instance": {"display": str(assessment.get("drug"))},
                             "causality": [{"assessment": {"text": str(assessment["relatedness"])}}]})
        if suspects:
            resource["suspectEntity"] = suspects
        bundle.add(resource)


def bundle_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"
