"""SDTM findings (LB, VS, QS) from the export snapshot: one record per value of an item the protocol
annotates with an SDTM test code.

Original result and unit as entered, standardized result and unit as normalized; a CMV-DNA result
below the assay's limit is ``<LLOQ`` (--STRESN null) and one not detected ``NOT DETECTED``; a ULN
the protocol pairs with the item gives the reference range and --NRIND; --LOBXFL marks the last
result on or before the first dose. Called by :func:`.sdtm.build_sdtm`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from cmvtrial.adapters.interop import sdtm_design as design
from cmvtrial.adapters.interop.sdtm_records import (
    SubjectRecords,
    canonical_or_as_given,
    iso,
    number_text,
    study_day,
)
from cmvtrial.adapters.interop.terminology import cdisc_unit
from cmvtrial.core import units
from cmvtrial.core.schedule import DETECTED_BELOW_LLOQ, NOT_DETECTED
from cmvtrial.errors import CmvtrialError

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Item
    from cmvtrial.services.export_data import ExportValue


def findings(records: SubjectRecords) -> dict[str, list[dict[str, Any]]]:
    """LB, VS and QS records: one per value of an item with an SDTM test code (see the module docstring)."""
    from cmvtrial.services.visit_data import cmv_items, uln_items

    cmv = cmv_items(records.protocol)
    ulns = uln_items(records.protocol)
    lloq = _lloq_in(records, cmv.form, cmv.load) if cmv else None
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for subject in records.data.subjects:
        values = records.data.values_of(subject.key)
        by_instance: dict[int, dict[str, ExportValue]] = defaultdict(dict)
        for value in values:
            by_instance[value.instance_id][value.item] = value
        for value in values:
            definition = records.item(value.form, value.item)
            sdtm = definition.sdtm if definition is not None else None
            if definition is None or sdtm is None or not sdtm.testcd:
                continue
            p = sdtm.domain
            siblings = by_instance[value.instance_id]
            category = None
            if cmv is not None and value.form == cmv.form and value.item == cmv.load and cmv.category:
                category = siblings[cmv.category].text if cmv.category in siblings else None
            record = {**records.ids(subject, p), f"{p}TESTCD": sdtm.testcd, f"{p}TEST": definition.display_label[:40],
                      f"{p}CAT": records.forms[value.form].name.upper()[:200]}
            record.update(_result(p, value, definition, category, lloq))
            uln = siblings.get(ulns.get(value.item, ""))
            if uln is not None and uln.number is not None:
                record[f"{p}ORNRHI"] = uln.entered_value
                record[f"{p}STNRHI"] = uln.number
                if record.get(f"{p}STRESN") is not None:
                    record[f"{p}NRIND"] = "HIGH" if record[f"{p}STRESN"] > uln.number else "NORMAL"
            if p == "LB":
                record["LBLOINC"] = definition.loinc
                if cmv is not None and value.item == cmv.load:
                    record["LBSPEC"] = records.protocol.assay.cmv_dna.specimen.upper().replace("_", " ")
            on = value.sample_date
            record.update({"VISITNUM": design.visit_number(records.protocol, value.visit_code, value.visit_index),
                           "VISIT": design.visit_name(records.protocol, value.visit_code, value.visit_index),
                           "EPOCH": records.epoch(subject, on), f"{p}DTC": iso(on),
                           f"{p}DY": study_day(on, records.reference(subject)), "_date": on})
            found[p].append(record)
    first_doses = {records.data.usubjid(s.key): records.first_dose(s) for s in records.data.subjects}
    for p, records in found.items():
        last: dict[tuple[str, str], dict[str, Any]] = {}
        for record in records:
            first, on = first_doses.get(record["USUBJID"]), record["_date"]
            if first is None or on is None or on > first or record.get(f"{p}ORRES") in (None, ""):
                continue
            key = (record["USUBJID"], record[f"{p}TESTCD"])
            if key not in last or last[key]["_date"] <= on:
                last[key] = record
        for record in last.values():
            record[f"{p}LOBXFL"] = "Y"
    return found

def _lloq_in(records: SubjectRecords, form_id: str, path: str) -> float | None:
    assay = records.protocol.assay.cmv_dna
    definition = records.item(form_id, path)
    try:
        lloq = assay.in_primary_unit(assay.lloq)
        if definition is not None and definition.unit and definition.unit != assay.primary_unit:
            lloq = units.convert(lloq, assay.primary_unit, definition.unit)
    except CmvtrialError:
        return None
    return float(lloq)

def _result(p: str, value: ExportValue, definition: Item, category: str | None, lloq: float | None) -> dict[str, Any]:
    unit = cdisc_unit(definition.unit)
    if value.missing_reason and value.entered_value is None:
        return {f"{p}ORRES": None, f"{p}STAT": "NOT DONE", f"{p}REASND": value.missing_reason}
    if category == NOT_DETECTED:
        return {f"{p}ORRES": "NOT DETECTED", f"{p}STRESC": "NOT DETECTED"}
    if category == DETECTED_BELOW_LLOQ and lloq is not None:
        text = f"<{number_text(lloq)}"
        return {f"{p}ORRES": text, f"{p}ORRESU": unit, f"{p}STRESC": text, f"{p}STRESU": unit}
    entered_unit = canonical_or_as_given(value.entered_unit) or definition.unit
    record: dict[str, Any] = {f"{p}ORRES": value.entered_value, f"{p}ORRESU": cdisc_unit(entered_unit)}
    if value.number is not None:
        record.update({f"{p}STRESC": number_text(value.number), f"{p}STRESN": float(value.number),
                       f"{p}STRESU": unit})
    elif value.text is not None:
        record[f"{p}STRESC"] = value.text
    return record
