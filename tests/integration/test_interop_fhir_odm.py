"""ODM 1.3.2 with its audit records, the FHIR R4 export (re-read with fhir.resources), and the FHIR lab
import through data entry: mapped, converted, windowed, audited with its source, idempotent; and a
malformed bundle refused whole, changing nothing."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import pytest
from data_capture_support import counts
from fhir.resources.R4B.bundle import Bundle
from interop_support import make_interop_trial
from sqlalchemy import select

from cmvtrial.adapters.interop.fhir_export import export_subject_bundle
from cmvtrial.adapters.interop.fhir_import import read_bundle
from cmvtrial.adapters.interop.odm import odm_xml
from cmvtrial.errors import Forbidden, InvalidInput
from cmvtrial.services.export_data import build_export_data, subject_by_pseudonym
from cmvtrial.services.lab_import import IMPORTED, NOT_IMPORTED, UNCHANGED, WOULD_IMPORT, import_lab_results
from cmvtrial.store.tables import AuditEvent, ItemValue, Subject

ODM = {"odm": "http://www.cdisc.org/ns/odm/v1.3"}
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fhir" / "labs_week3.json"
TODAY = date(2025, 3, 24)


@pytest.fixture
def trial(trial_database, protocol_id, admin):
    return make_interop_trial(trial_database, protocol_id, admin)


def bundle_text(**changes):
    document = json.loads(FIXTURE.read_text(encoding="utf-8"))
    for index, resource in changes.items():
        document["entry"][int(index[1:])]["resource"] = resource
    return json.dumps(document)


def test_odm_holds_metadata_clinical_data_and_each_values_audit_trail(trial):
    data = build_export_data(trial.uow, trial.data_manager, include_audit=True)
    root = ET.fromstring(odm_xml(data))
    assert (root.get("ODMVersion"), root.get("FileType")) == ("1.3.2", "Transactional")
    version = root.find("odm:Study/odm:MetaDataVersion", ODM)
    assert {e.get("OID") for e in version.findall("odm:StudyEventDef", ODM)} == {f"SE.{v.code}" for v in data.protocol.visits}
    anc = version.find("odm:ItemDef[@OID='I.hematology.anc']", ODM)
    assert anc.find("odm:Alias[@Context='LOINC']", ODM).get("Name") == "751-8"
    assert anc.find("odm:RangeCheck[@SoftHard='Hard']", ODM).find("odm:CheckValue", ODM).text == "0"

    subject = root.find(f"odm:ClinicalData/odm:SubjectData[@SubjectKey='{data.subject(trial.second).subject_id}']", ODM)
    week = subject.find("odm:StudyEventData[@StudyEventOID='SE.TW'][@StudyEventRepeatKey='2']", ODM)
    load = week.find(".//odm:ItemData[@ItemOID='I.cmv_load.cmv_dna']", ODM)
    assert load.get("Value") == "800" and load.get("TransactionType") == "Insert"
    assert load.find("odm:MeasurementUnitRef", ODM).get("MeasurementUnitOID") == "MU.copies_mL"
    record = load.find("odm:AuditRecord", ODM)
    sequence = int(record.find("odm:SourceID", ODM).text.removeprefix("audit:"))
    with trial.uow.reading():
        event = trial.uow.session.get(AuditEvent, sequence)
        assert (event.action, event.username) == ("item_value.create", "coord")
        assert record.find("odm:DateTimeStamp", ODM).text == event.occurred_at.isoformat()
        stored = trial.uow.session.scalar(select(ItemValue).where(ItemValue.subject_id == trial.second))
    assert record.find("odm:UserRef", ODM).get("UserOID") == f"USR.{trial.coordinator.user_id}"
    # Every stored value appears with at least one audited version; no date of birth leaves.
    values = root.findall(".//odm:ClinicalData//odm:ItemData", ODM)
    assert len(values) == len(data.audit) - sum(1 for a in data.audit if "birth_date" in json.dumps(a.after or {}))
    assert stored is not None and all(v.find("odm:AuditRecord", ODM) is not None for v in values)
    assert not root.findall(".//odm:ItemData[@ItemOID='I.screening.birth_date']", ODM)


def test_a_changed_value_exports_its_history(trial):
    from cmvtrial.services.data_entry import enter_visit_data

    enter_visit_data(trial.uow, trial.coordinator, trial.second, "TW2",
                     {"cmv_load": {"cmv_dna": {"value": 900, "unit": "copies/mL"}}}, today=TODAY,
                     reason="transcription error")
    root = ET.fromstring(odm_xml(build_export_data(trial.uow, trial.data_manager, include_audit=True)))
    history = [e for e in root.findall(".//odm:StudyEventData[@StudyEventRepeatKey='2']//odm:ItemData"
                                       "[@ItemOID='I.cmv_load.cmv_dna']", ODM) if e.get("Value") in ("800", "900")]
    second = [e for e in history if e.get("Value") == "900"]
    assert [e.get("TransactionType") for e in second] == ["Update"]
    assert second[0].find("odm:AuditRecord/odm:ReasonForChange", ODM).text == "transcription error"


def test_fhir_export_parses_as_r4_and_matches_the_data(trial):
    data = build_export_data(trial.uow, trial.statistician, subject_id=trial.first)
    document = export_subject_bundle(data, trial.first)
    bundle = Bundle.model_validate(document)
    resources = [entry.resource for entry in bundle.entry]
    kinds = {r.__resource_type__ for r in resources}
    assert {"Patient", "ResearchStudy", "ResearchSubject", "Observation", "MedicationAdministration",
            "AdverseEvent"} <= kinds
    patient = next(r for r in resources if r.__resource_type__ == "Patient")
    pseudonym = data.subject(trial.first).subject_id
    assert patient.identifier[0].value == pseudonym and patient.gender == "female" and patient.birthDate is None
    assert subject_by_pseudonym(trial.uow, trial.statistician, pseudonym) == trial.first
    research = next(r for r in resources if r.__resource_type__ == "ResearchSubject")
    assert (research.status, research.assignedArm) == ("follow-up", trial.arms[trial.first])
    observations = {(o.code.coding[0].code, str(o.effectiveDateTime)): o for o in resources
                    if o.__resource_type__ == "Observation"}
    alt = observations[("1742-6", "2025-03-03")]
    assert (float(alt.valueQuantity.value), alt.valueQuantity.code, float(alt.referenceRange[0].high.value)) == (
        50.0, "U/L", 40.0)
    cmv = observations[("30247-1", "2025-03-03")]
    assert (float(cmv.valueQuantity.value), cmv.valueQuantity.code, cmv.valueQuantity.system) == (
        20000.0, "{copies}/mL", "http://unitsofmeasure.org")
    below = observations[("30247-1", "2025-03-17")]
    assert below.valueQuantity.comparator == "<"
    doses = [r for r in resources if r.__resource_type__ == "MedicationAdministration"]
    assert {d.status for d in doses} == {"completed", "not-done"}
    held = next(d for d in doses if d.status == "not-done")
    assert held.statusReason[0].text == "platelets 20"
    event = next(r for r in resources if r.__resource_type__ == "AdverseEvent")
    assert (event.event.text, event.severity.text, event.outcome.coding[0].code) == (
        "Neutrophil count decreased", "CTCAE v5.0 grade 3", "recovering")
    # The bundle's own observations read back through the importer give the same values.
    results = {(r.codes[0], r.effective): r for r in read_bundle(json.dumps(document)) if r.codes}
    assert results[("1742-6", date(2025, 3, 3))].value == 50 and results[("30247-1", date(2025, 3, 17))].comparator == "<"
    with pytest.raises(Forbidden):
        build_export_data(trial.uow, trial.coordinator, subject_id=trial.first)


def test_import_maps_converts_windows_and_enters_through_data_entry_once(trial):
    results = read_bundle(FIXTURE.read_text(encoding="utf-8"))
    before = counts(trial.uow)
    preview = import_lab_results(trial.uow, trial.coordinator, trial.second, results, today=TODAY,
                                 source="labs_week3.json", dry_run=True)
    assert counts(trial.uow) == before  # a dry run changes nothing
    outcome = {line.source_id: line for line in preview.lines}
    assert [outcome[f"Observation/{name}"].outcome for name in ("cmv-tw3", "anc-tw3", "plt-tw3")] == [WOULD_IMPORT] * 3
    assert "unknown code" in outcome["Observation/crp"].message
    assert "outside every visit window" in outcome["Observation/hgb-late"].message
    assert "cannot be converted" in outcome["Observation/wbc-bad-unit"].message
    assert "Observation/old-error" not in outcome  # entered-in-error results are not results
    local = {"resourceType": "Observation", "id": "local", "status": "final", "effectiveDateTime": "2025-03-24",
             "code": {"coding": [{"system": "http://example.org/lab", "code": "CMV-PCR"}], "text": "CMV PCR"},
             "valueQuantity": {"value": 5, "unit": "IU/mL"}}
    only_local = read_bundle(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": local}]}))
    line, = import_lab_results(trial.uow, trial.coordinator, trial.second, only_local, today=TODAY, source="x").lines
    assert (line.outcome, line.message) == (NOT_IMPORTED, "unknown code: 'CMV PCR' carries no LOINC code")
    assert counts(trial.uow) == before

    report = import_lab_results(trial.uow, trial.coordinator, trial.second, results, today=TODAY,
                                source="labs_week3.json")
    assert (report.count(IMPORTED), report.count(NOT_IMPORTED), report.visits_entered) == (3, 3, ("TW3",))
    with trial.uow.reading():
        rows = {row.item_id: row for row in trial.uow.session.scalars(
            select(ItemValue).where(ItemValue.subject_id == trial.second, ItemValue.source == "fhir"))}
        events = list(trial.uow.session.scalars(select(AuditEvent).where(AuditEvent.action == "item_value.create")
                                                .order_by(AuditEvent.sequence.desc()).limit(len(rows))))
    assert rows["cmv_dna"].normalized_number == pytest.approx(2450 * 1.1)  # IU/mL through the assay factor
    assert (rows["cmv_dna"].entered_value, rows["cmv_dna"].entered_unit) == ("2450", "[IU]/mL")
    assert rows["anc"].normalized_number == pytest.approx(2.8)  # /uL -> 10^9/L
    assert rows["collection_date"].normalized_text == "2025-03-24" and rows["result"].normalized_text == "quantified"
    assert all("imported from FHIR (labs_week3.json)" in (e.reason or "") for e in events)

    after = counts(trial.uow)
    again = import_lab_results(trial.uow, trial.coordinator, trial.second, results, today=TODAY, source="labs_week3.json")
    assert again.count(UNCHANGED) == 3 and again.count(IMPORTED) == 0
    assert counts(trial.uow) == after  # the same bundle twice creates nothing new


def test_a_result_below_the_limit_ends_treatment_like_a_typed_one(trial):
    below = {"resourceType": "Observation", "id": "cmv-blq", "status": "final",
             "code": {"coding": [{"system": "http://loinc.org", "code": "72493-0"}]},
             "effectiveDateTime": "2025-03-24",
             "valueQuantity": {"value": 137, "comparator": "<", "unit": "IU/mL", "system": "http://unitsofmeasure.org",
                               "code": "[IU]/mL"}}
    results = read_bundle(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": below}]}))
    report = import_lab_results(trial.uow, trial.coordinator, trial.second, results, today=TODAY, source="blq.json")
    assert report.count(IMPORTED) == 1
    with trial.uow.reading():
        subject = trial.uow.session.get(Subject, trial.second)
        assert subject.end_of_treatment_date == TODAY and subject.status == "in_follow_up"


@pytest.mark.parametrize("case", ["not_json", "wrong_type", "missing_code", "empty_code", "no_unit", "no_date",
                                  "unknown_key"])
def test_a_malformed_bundle_is_refused_whole_and_changes_nothing(trial, case):
    good = json.loads(FIXTURE.read_text(encoding="utf-8"))["entry"][0]["resource"]
    broken = copy.deepcopy(good)
    text = {"not_json": '{"resourceType": "Bundle", ', "wrong_type": json.dumps(good)}.get(case)
    if case == "missing_code":
        del broken["code"]
    elif case == "no_unit":
        broken["valueQuantity"] = {"value": 2450}
    elif case == "empty_code":
        broken["code"] = {}
    elif case == "no_date":
        del broken["effectiveDateTime"]
    elif case == "unknown_key":
        broken["valueQuantty"] = broken.pop("valueQuantity")
    text = text or bundle_text(e0=broken)
    before = counts(trial.uow)
    with pytest.raises(InvalidInput) as refused:
        results = read_bundle(text)
        import_lab_results(trial.uow, trial.coordinator, trial.second, results, today=TODAY, source="bad.json")
    message = refused.value.message
    expected = {"not_json": "not JSON", "wrong_type": "resourceType is 'Observation'", "missing_code": "code",
                "empty_code": "empty code", "no_unit": "no unit", "no_date": "no effective date",
                "unknown_key": "valueQuantty"}[case]
    assert expected in message and "nothing was imported" in message
    assert counts(trial.uow) == before


def test_only_site_staff_import_and_only_for_a_randomized_subject(trial):
    from cmvtrial.errors import Refused

    results = read_bundle(FIXTURE.read_text(encoding="utf-8"))
    before = counts(trial.uow)
    with pytest.raises(Forbidden):
        import_lab_results(trial.uow, trial.data_manager, trial.second, results, today=TODAY, source="x")
    with pytest.raises(Refused):
        import_lab_results(trial.uow, trial.coordinator, trial.failed, results, today=TODAY, source="x")
    assert counts(trial.uow) == before
