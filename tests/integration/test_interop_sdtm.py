"""SDTM, Define-XML, Dataset-JSON and ADaM exports of a trial built through the services, on both
protocols and both databases: written, read back with pyreadstat, compared field by field with what
was entered, and passed through our own conformance checks."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import date

import pyreadstat
import pytest
from interop_support import RANDOMIZED_ON, TODAY, make_interop_trial
from sqlalchemy import func, select

from cmvtrial.adapters.interop.adam import build_adam
from cmvtrial.adapters.interop.dataset_files import read_folder, write_package
from cmvtrial.adapters.interop.sdtm import build_sdtm
from cmvtrial.adapters.interop.sdtm_check import check_folder
from cmvtrial.adapters.interop.sdtm_spec import DATASETS
from cmvtrial.analysis.derivations import derive_datasets
from cmvtrial.errors import Forbidden
from cmvtrial.services.analysis_data import build_trial_data
from cmvtrial.services.export_data import build_export_data, record_export
from cmvtrial.store.tables import AuditEvent

DEFINE = {"odm": "http://www.cdisc.org/ns/odm/v1.3", "def": "http://www.cdisc.org/ns/def/v2.1"}


@pytest.fixture(params=["sle-cmv-il2", "nct04225780"])
def protocol_id(request):
    return request.param


@pytest.fixture
def trial(trial_database, protocol_id, admin):
    return make_interop_trial(trial_database, protocol_id, admin)


@pytest.fixture
def exported(trial, tmp_path):
    data = build_export_data(trial.uow, trial.data_manager)
    package = build_sdtm(data)
    folder = tmp_path / "sdtm"
    write_package(package, folder, ("xpt", "csv", "json"), generated_at=data.generated_at)
    return data, package, folder


def xpt(folder, name):
    frame, meta = pyreadstat.read_xport(str(folder / f"{name}.xpt"))
    return frame, meta


def test_sdtm_round_trip_field_by_field_and_conformance(trial, exported):
    data, package, folder = exported
    first, second, failed = (data.subject(key) for key in (trial.first, trial.second, trial.failed))
    study = trial.protocol_id.upper()

    # Every dataset the issue names is written, and conforms to our checks (no error, no warning).
    assert {"TS", "TA", "TE", "TV", "DM", "DS", "SV", "EX", "AE", "CM", "MH", "LB", "VS"} <= set(package.datasets)
    report = check_folder(folder)
    assert report.findings == (), [f.line() for f in report.findings]

    # DM: every screened candidate, pseudonymized; the screen failure with ARMNRS.
    dm, meta = xpt(folder, "dm")
    assert meta.table_name == "DM" and meta.file_label == "Demographics"
    assert meta.column_names_to_labels["RFSTDTC"] == "Subject Reference Start Date/Time"
    rows = dm.set_index("SUBJID")
    assert set(rows.index) == {first.subject_id, second.subject_id, failed.subject_id}
    assert all(s.startswith("P") and len(s) == 11 for s in rows.index)
    one = rows.loc[first.subject_id]
    assert (one["USUBJID"], one["SITEID"], one["SEX"], one["AGE"], one["AGEU"], one["COUNTRY"]) == (
        f"{study}-PKUPH-{first.subject_id}", "PKUPH", "F", 38.0, "YEARS", "CHN")
    assert (one["RFSTDTC"], one["RFXSTDTC"], one["RFICDTC"]) == (RANDOMIZED_ON.isoformat(),) * 3
    assert one["ARMCD"] == trial.arms[trial.first].upper() and one["ARMCD"] == one["ACTARMCD"]
    assert rows.loc[failed.subject_id, "ARMNRS"] == "SCREEN FAILURE" and rows.loc[failed.subject_id, "ARMCD"] == ""
    assert "BRTHDTC" not in dm.columns  # identifying: never exported

    # USUBJID is the same in every subject dataset, and no real identifier leaves.
    subjects = set(dm["USUBJID"])
    for name in ("DS", "SV", "EX", "AE", "CM", "MH", "LB", "VS"):
        frame, _meta = xpt(folder, name.lower())
        assert set(frame["USUBJID"]) <= subjects
        key = f"{name}SEQ" if name != "SV" else "VISITNUM"
        assert not frame.duplicated(["USUBJID", key]).any()
    for path in folder.iterdir():
        text = path.read_bytes()
        assert b"S-001" not in text and b"PKUPH-001" not in text and b"1985-09-12" not in text, path.name

    # LB: original and standardized results, CMV-DNA in copies/mL (the IU/mL screening value converted).
    lb, _meta = xpt(folder, "lb")
    cmv = lb[(lb["USUBJID"] == data.usubjid(trial.second)) & (lb["LBTESTCD"] == "CMVVLD")].sort_values("LBSEQ")
    assert list(cmv["LBORRES"]) == ["910", "30000", "3000.0", "800"]
    assert list(cmv["LBORRESU"]) == ["IU/mL", "copies/mL", "copies/mL", "copies/mL"]
    assert list(cmv["LBSTRESN"]) == pytest.approx([1001, 30000, 3000, 800])
    assert list(cmv["LBSTRESC"]) == ["1001", "30000", "3000", "800"]
    assert list(cmv["LBDY"]) == [(date(2024, 5, 20) - RANDOMIZED_ON).days, 1, 8, 15]
    assert list(cmv["LBLOBXFL"]) == ["", "Y", "", ""] and set(cmv["LBLOINC"]) == {"30247-1"}
    blq = lb[(lb["USUBJID"] == data.usubjid(trial.first)) & (lb["LBTESTCD"] == "CMVVLD") & (lb["VISIT"] != "Screening")]
    below = blq.sort_values("LBSEQ").iloc[-1]
    assert below["LBORRES"].startswith("<") and below["LBSTRESC"] == below["LBORRES"] and below["LBSTRESN"] != \
        below["LBSTRESN"]  # NaN: no number for a result below the limit
    alt = lb[(lb["USUBJID"] == data.usubjid(trial.first)) & (lb["LBTESTCD"] == "ALT") & (lb["VISIT"] == "Baseline")].iloc[0]
    assert (alt["LBSTRESN"], alt["LBSTNRHI"], alt["LBNRIND"], alt["LBORRESU"]) == (50, 40, "HIGH", "U/L")
    creatinine = lb[(lb["USUBJID"] == data.usubjid(trial.first)) & (lb["LBTESTCD"] == "CREAT")
                    & (lb["VISIT"] == "Baseline")].iloc[0]
    assert (creatinine["LBORRES"], creatinine["LBORRESU"], creatinine["LBSTRESU"]) == ("70", "umol/L", "mg/dL")
    assert creatinine["LBSTRESN"] == pytest.approx(70 / 88.4)

    # EX: the doses given (not the held one), CDISC units, routes and frequencies from the protocol.
    ex, _meta = xpt(folder, "ex")
    mine = ex[ex["USUBJID"] == data.usubjid(trial.first)]
    drugs = {r.drug.upper() for r in trial_protocol(data).arm(trial.arms[trial.first]).regimens}
    assert set(mine["EXTRT"]) == drugs and len(mine) == len(drugs)
    gcv = mine[mine["EXTRT"] == "GANCICLOVIR"].iloc[0]
    assert (gcv["EXDOSE"], gcv["EXDOSU"], gcv["EXROUTE"], gcv["EXDOSFRQ"], gcv["EXSTDY"]) == (
        300, "mg", "INTRAVENOUS", "QD", 1)

    # AE: CTCAE term and grade, study day, seriousness.
    ae, _meta = xpt(folder, "ae")
    event = ae.iloc[0]
    assert (event["AETERM"], event["AEDECOD"], event["AETOXGR"], event["AESER"], event["AEOUT"], event["AESTDY"]) == (
        "Neutrophil count decreased", "Neutrophil count decreased", "3", "N", "RECOVERING/RESOLVING", 3)
    assert event["AEACN"] == "DOSE NOT CHANGED" and event["AEREL"] == "POSSIBLE"

    # DS and SV: milestones, the end of treatment, visits done.
    ds, _meta = xpt(folder, "ds")
    decoded = set(ds.loc[ds["USUBJID"] == data.usubjid(trial.first), "DSDECOD"])
    assert decoded == {"INFORMED CONSENT OBTAINED", "RANDOMIZED", "COMPLETED"}
    assert set(ds.loc[ds["USUBJID"] == data.usubjid(trial.failed), "DSDECOD"]) == {"SCREEN FAILURE"}
    sv, _meta = xpt(folder, "sv")
    assert list(sv.loc[sv["USUBJID"] == data.usubjid(trial.second), "VISIT"]) == [
        "Screening", "Baseline", "Treatment week 1", "Treatment week 2"]

    # Dataset-JSON and CSV hold the same rows as the XPORT files.
    for dataset in read_folder(folder):
        document = json.loads((folder / f"{dataset.name.lower()}.json").read_text(encoding="utf-8"))
        assert document["datasetJSONVersion"] == "1.1.0" and document["records"] == len(dataset.frame)
        assert [c["name"] for c in document["columns"]] == list(dataset.frame.columns)
        assert [c["label"] for c in document["columns"]] == [dataset.labels[c] for c in dataset.frame.columns]


def trial_protocol(data):
    return data.protocol


def test_define_xml_describes_every_dataset_and_variable(exported):
    _data, package, folder = exported
    root = ET.parse(folder / "define.xml").getroot()
    assert root.get("ODMVersion") == "1.3.2"
    version = root.find("odm:Study/odm:MetaDataVersion", DEFINE)
    assert version.get(f"{{{DEFINE['def']}}}DefineVersion") == "2.1.0"
    groups = {g.get("Name"): g for g in version.findall("odm:ItemGroupDef", DEFINE)}
    assert set(groups) == set(package.datasets)
    items = {i.get("OID"): i for i in version.findall("odm:ItemDef", DEFINE)}
    for name, frame in package.datasets.items():
        refs = [ref.get("ItemOID") for ref in groups[name].findall("odm:ItemRef", DEFINE)]
        assert refs == [f"IT.{name}.{column}" for column in frame.columns]
        leaf = groups[name].find("def:leaf", DEFINE)
        assert (folder / leaf.get("{http://www.w3.org/1999/xlink}href")).exists()
        for column in frame.columns:
            item = items[f"IT.{name}.{column}"]
            label = item.find("odm:Description/odm:TranslatedText", DEFINE).text
            variable = DATASETS[name].variable(column)
            assert label == (variable.label if variable else column) and len(label) <= 40
            if item.get("DataType") in ("text", "datetime"):
                widest = max((len(str(v)) for v in frame[column] if isinstance(v, str)), default=1)
                assert int(item.get("Length")) == widest
    sex = items["IT.DM.SEX"].find("odm:CodeListRef", DEFINE).get("CodeListOID")
    codes = [e.get("CodedValue") for e in version.find(f"odm:CodeList[@OID='{sex}']", DEFINE)
             .findall("odm:EnumeratedItem", DEFINE)]
    assert "F" in codes and "M" in codes


def test_adam_is_traceable_to_sdtm(trial, exported):
    data, package, _folder = exported
    datasets = derive_datasets(build_trial_data(trial.uow, trial.statistician, data_cutoff=TODAY))
    adam = build_adam(datasets, sdtm=package, usubjids={s.label: data.usubjid(s.key) for s in data.subjects})
    dm = package.datasets["DM"].set_index("USUBJID")
    assert set(adam.adsl["USUBJID"]) <= set(dm.index)
    row = adam.adsl.set_index("USUBJID").loc[data.usubjid(trial.first)]
    assert (row["STUDYID"], row["ARM"], row["AGEU"], row["SUBJID"]) == (
        package.study_id, dm.loc[data.usubjid(trial.first), "ARM"], "YEARS", data.subject(trial.first).subject_id)
    tte = adam.adtte.set_index("USUBJID").loc[data.usubjid(trial.first)]
    assert (tte["PARAMCD"], tte["CNSR"], tte["ADT"].date()) == ("DURVIR", 0, date(2025, 3, 17))
    lb = package.datasets["LB"]
    source = lb[(lb["USUBJID"] == data.usubjid(trial.first)) & (lb["LBSEQ"] == tte["SRCSEQ"])].iloc[0]
    assert (tte["SRCDOM"], source["LBTESTCD"], source["LBDTC"]) == ("LB", "CMVVLD", "2025-03-17")
    censored = adam.adtte.set_index("USUBJID").loc[data.usubjid(trial.second)]
    assert censored["CNSR"] == 1 and censored["CNSDTDSC"] == "DATE OF LAST CMV-DNA ASSESSMENT"
    traced = adam.adlb[adam.adlb["BLQFL"] != "Y"]
    assert set(traced["PARAMCD"]) >= {"CMVLOG10", "NKCE"} and traced["SRCSEQ"].notna().all()
    for record in traced.itertuples():
        found = package.datasets[record.SRCDOM]
        match = found[(found["USUBJID"] == record.USUBJID) & (found[f"{record.SRCDOM}SEQ"] == record.SRCSEQ)].iloc[0]
        value = 10 ** record.AVAL if record.PARAMCD == "CMVLOG10" else record.AVAL
        assert (match[record.SRCVAR], match[f"{record.SRCDOM}DTC"]) == (pytest.approx(value), record.ADT.date().isoformat())
    baseline = adam.adlb[(adam.adlb["ABLFL"] == "Y")]
    assert {"PARAMCD", "AVAL", "BASE", "CHG", "AVISIT"} <= set(adam.adlb.columns) and not baseline.empty


def test_only_sponsor_data_roles_export_and_an_export_is_audited(trial):
    for actor in (trial.coordinator, trial.investigator, trial.monitor, trial.admin):
        with pytest.raises(Forbidden):
            build_export_data(trial.uow, actor)
    with trial.uow.reading():
        before = trial.uow.session.scalar(select(func.count()).select_from(AuditEvent))
    record_export(trial.uow, trial.statistician, "sdtm", {"formats": ["xpt"]})
    with trial.uow.reading():
        events = list(trial.uow.session.scalars(select(AuditEvent).order_by(AuditEvent.sequence.desc()).limit(1)))
        assert trial.uow.session.scalar(select(func.count()).select_from(AuditEvent)) == before + 1
    assert (events[0].action, events[0].username, events[0].entity_type) == ("data.export", "stat", "export")
