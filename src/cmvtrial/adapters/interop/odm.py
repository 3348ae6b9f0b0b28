"""CDISC ODM 1.3.2: the study's metadata from the protocol and its clinical data with the audit trail.

Why ODM: it is the exchange format of EDC systems (DESIGN.md §2 modelled the store on it), so a
sponsor's or a registry's system can take the trial as it was captured — every visit, form and item
value, and for each value the changes that led to it.

- **Study metadata** (``MetaDataVersion``): the visit plan as ``StudyEventDef`` (a repeating visit
  ``Repeating="Yes"``), each visit's forms as ``FormRef``, each form's items as an ``ItemGroupDef``
  (a group item such as the screening corticosteroid gets an ItemGroupDef of its own), each item
  as ``ItemDef`` with its data type, question, units, hard and soft range checks, codelist, LOINC
  code (``Alias Context="LOINC"``) and SDTM target (``SDSVarName``/``Alias Context="SDTM"``);
  codelists as ``CodeList``; units as ``MeasurementUnit``.
- **Administrative data**: the users (by user name and role) and the sites as ``Location``.
- **Clinical data** (``FileType="Transactional"``): per subject (pseudonymized ``SubjectKey``),
  visit occurrence (``StudyEventRepeatKey``), form and item group, one ``ItemData`` per audited
  version of a value, oldest first — ``TransactionType`` Insert, Update or Remove — each with its
  ``AuditRecord`` (user, site, UTC time stamp, reason for change, and the audit event's sequence
  number as ``SourceID``, so the file can be checked against `cmvtrial audit verify`) and the unit
  the value was entered in. A value stored before its audit trail existed (none in practice) is
  written once as its current version. Items the SDTM export withholds as identifying (a date of
  birth, ``sdtm.WITHHELD``) are left out here too.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cmvtrial.adapters.interop.sdtm import WITHHELD
from cmvtrial.core import units
from cmvtrial.errors import CmvtrialError

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Form, Item, Protocol
    from cmvtrial.services.export_data import ExportData, ExportValue

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
ET.register_namespace("", ODM_NS)

_DATA_TYPES = {"quantity": "float", "integer": "integer", "text": "text", "date": "date", "datetime": "datetime",
               "boolean": "boolean", "code": "text", "code_list": "text"}
_TRANSACTIONS = {"create": "Insert", "update": "Update", "delete": "Remove"}


def _o(tag: str) -> str:
    return f"{{{ODM_NS}}}{tag}"


def _translated(parent: ET.Element, tag: str, text: str) -> None:
    element = ET.SubElement(parent, _o(tag))
    ET.SubElement(element, _o("TranslatedText"), {XML_LANG: "en"}).text = text


def _stamp(moment: datetime) -> str:
    return moment.isoformat()


def unit_oid(code: str) -> str:
    return "MU." + "".join(c if c.isalnum() else "_" for c in code)


def form_groups(form: Form) -> list[tuple[str, str, tuple[tuple[str, Item], ...]]]:
    """(ItemGroupOID, name, ((path, item) ...)) of a form: its plain items, then one per group item."""
    plain = tuple((item.id, item) for item in form.items if item.type != "group")
    groups = [(f"IG.{form.id}", form.name, plain)] if plain else []
    for item in form.items:
        if item.type == "group":
            groups.append((f"IG.{form.id}.{item.id}", item.display_label,
                           tuple((f"{item.id}.{child.id}", child) for child in item.items)))
    return groups


def _metadata(study: ET.Element, protocol: Protocol, oid: str) -> None:
    basic = ET.SubElement(study, _o("BasicDefinitions"))
    codes = sorted({code for form in protocol.forms for _path, item in form.item_paths().items()
                    for code in ([item.unit] if item.unit else []) + [a.unit for a in item.alternative_units]})
    for code in codes:
        unit = ET.SubElement(basic, _o("MeasurementUnit"), {"OID": unit_oid(code), "Name": code})
        _translated(unit, "Symbol", code)
    metadata = ET.SubElement(study, _o("MetaDataVersion"), {
        "OID": oid, "Name": f"{protocol.id} version {protocol.version}",
        "Description": protocol.title})
    plan = ET.SubElement(metadata, _o("Protocol"))
    for order, visit in enumerate(protocol.visits, start=1):
        ET.SubElement(plan, _o("StudyEventRef"), {"StudyEventOID": f"SE.{visit.code}", "OrderNumber": str(order),
                                                  "Mandatory": "No" if visit.repeat else "Yes"})
    for visit in protocol.visits:
        event = ET.SubElement(metadata, _o("StudyEventDef"), {
            "OID": f"SE.{visit.code}", "Name": visit.name, "Repeating": "Yes" if visit.repeat else "No",
            "Type": "Scheduled"})
        for order, form_id in enumerate(visit.forms, start=1):
            ET.SubElement(event, _o("FormRef"), {"FormOID": f"F.{form_id}", "OrderNumber": str(order),
                                                 "Mandatory": "No"})
    for form in protocol.forms:
        element = ET.SubElement(metadata, _o("FormDef"), {"OID": f"F.{form.id}", "Name": form.name,
                                                          "Repeating": "Yes" if form.repeating else "No"})
        for order, (group_oid, _name, _items) in enumerate(form_groups(form), start=1):
            ET.SubElement(element, _o("ItemGroupRef"), {"ItemGroupOID": group_oid, "OrderNumber": str(order),
                                                         "Mandatory": "No"})
    item_defs: list[ET.Element] = []
    for form in protocol.forms:
        for group_oid, name, items in form_groups(form):
            group = ET.SubElement(metadata, _o("ItemGroupDef"), {"OID": group_oid, "Name": name, "Repeating": "No"})
            for order, (path, item) in enumerate(items, start=1):
                ET.SubElement(group, _o("ItemRef"), {"ItemOID": f"I.{form.id}.{path}", "OrderNumber": str(order),
                                                     "Mandatory": "Yes" if item.required else "No"})
                item_defs.append(_item_def(form, path, item))
    metadata.extend(item_defs)
    for codelist in protocol.codelists:
        element = ET.SubElement(metadata, _o("CodeList"), {"OID": f"CL.{codelist.id}", "Name": codelist.name or codelist.id,
                                                           "DataType": "text"})
        for entry in codelist.items:
            item = ET.SubElement(element, _o("CodeListItem"), {"CodedValue": entry.code})
            _translated(item, "Decode", entry.label)


def _item_def(form: Form, path: str, item: Item) -> ET.Element:
    attributes = {"OID": f"I.{form.id}.{path}", "Name": path, "DataType": _DATA_TYPES.get(item.type, "text")}
    if item.sdtm is not None and item.sdtm.variable:
        attributes["SDSVarName"] = item.sdtm.variable
    element = ET.Element(_o("ItemDef"), attributes)
    _translated(element, "Question", item.display_label)
    if item.unit:
        for code in [item.unit] + [a.unit for a in item.alternative_units]:
            ET.SubElement(element, _o("MeasurementUnitRef"), {"MeasurementUnitOID": unit_oid(code)})
    for kind, limits in (("Hard", item.hard_limits), ("Soft", item.soft_limits)):
        if limits is None:
            continue
        for comparator, value in (("GE", limits.min), ("LE", limits.max)):
            if value is None:
                continue
            check = ET.SubElement(element, _o("RangeCheck"), {"Comparator": comparator, "SoftHard": kind})
            ET.SubElement(check, _o("CheckValue")).text = f"{value:g}"
            if item.unit:
                ET.SubElement(check, _o("MeasurementUnitRef"), {"MeasurementUnitOID": unit_oid(item.unit)})
    if item.codelist:
        ET.SubElement(element, _o("CodeListRef"), {"CodeListOID": f"CL.{item.codelist}"})
    if item.loinc:
        ET.SubElement(element, _o("Alias"), {"Context": "LOINC", "Name": item.loinc})
    if item.sdtm is not None:
        target = item.sdtm.testcd or item.sdtm.variable or ""
        ET.SubElement(element, _o("Alias"), {"Context": "SDTM", "Name": f"{item.sdtm.domain}.{target}"})
    return element


def _admin(root: ET.Element, data: ExportData, mdv: str, study_oid: str) -> None:
    admin = ET.SubElement(root, _o("AdminData"), {"StudyOID": study_oid})
    for user in data.users:
        element = ET.SubElement(admin, _o("User"), {"OID": f"USR.{user.user_id}", "UserType": "Other"})
        ET.SubElement(element, _o("LoginName")).text = user.username
        ET.SubElement(element, _o("Organization")).text = user.role
        if user.site:
            ET.SubElement(element, _o("LocationRef"), {"LocationOID": f"LOC.{user.site}"})
    for site in data.sites:
        element = ET.SubElement(admin, _o("Location"), {"OID": f"LOC.{site.code}", "Name": site.name,
                                                        "LocationType": "Site"})
        ET.SubElement(element, _o("MetaDataVersionRef"), {"StudyOID": study_oid, "MetaDataVersionOID": mdv,
                                                          "EffectiveDate": data.generated_at.date().isoformat()})


def _versions(data: ExportData) -> dict[int, list[tuple[str, Mapping[str, Any] | None, Any]]]:
    """Per value id: (transaction, the value's state after it, the audit event), oldest first."""
    found: dict[int, list[tuple[str, Mapping[str, Any] | None, Any]]] = defaultdict(list)
    for event in data.audit:
        action = event.action.rsplit(".", 1)[-1]
        transaction = _TRANSACTIONS.get(action)
        if transaction is None:
            continue
        try:
            value_id = int(event.entity_id)
        except ValueError:
            continue
        found[value_id].append((transaction, event.after if transaction != "Remove" else event.before, event))
    return found


def _value_text(state: Mapping[str, Any]) -> tuple[str | None, str | None]:
    entered = state.get("entered_value")
    unit = state.get("entered_unit") if entered is not None else None
    if unit:
        try:
            unit = units.canonical_unit(str(unit))
        except CmvtrialError:
            pass
    return (None if entered is None else str(entered)), unit


def _item_data(parent: ET.Element, oid: str, transaction: str, state: Mapping[str, Any] | None, event: Any,
               user_oids: Mapping[str, str], known_units: set[str]) -> None:
    attributes = {"ItemOID": oid, "TransactionType": transaction}
    entered, unit = _value_text(state or {})
    if transaction != "Remove":
        if entered is None:
            attributes["IsNull"] = "Yes"
        else:
            attributes["Value"] = entered
    element = ET.SubElement(parent, _o("ItemData"), attributes)
    if event is not None:
        record = ET.SubElement(element, _o("AuditRecord"), {"EditPoint": "DataEntry", "UsedImputationMethod": "No"})
        ET.SubElement(record, _o("UserRef"), {"UserOID": user_oids.get(event.username, f"USR.{event.username}")})
        ET.SubElement(record, _o("LocationRef"), {"LocationOID": f"LOC.{event.site}" if event.site else "LOC.SPONSOR"})
        ET.SubElement(record, _o("DateTimeStamp")).text = _stamp(event.occurred_at)
        reason = event.reason or (state or {}).get("missing_reason")
        if reason:
            ET.SubElement(record, _o("ReasonForChange")).text = str(reason)
        ET.SubElement(record, _o("SourceID")).text = f"audit:{event.sequence}"
    if unit and transaction != "Remove" and unit in known_units:
        ET.SubElement(element, _o("MeasurementUnitRef"), {"MeasurementUnitOID": unit_oid(unit)})


def odm_xml(data: ExportData, *, source_version: str = "") -> str:
    """The ODM 1.3.2 document of ``data`` (metadata, admin data and transactional clinical data)."""
    protocol = data.protocol
    study_oid = f"ST.{data.study_id}"
    mdv = f"MDV.{protocol.id}.{protocol.version}"
    root = ET.Element(_o("ODM"), {
        "FileType": "Transactional", "Granularity": "All", "FileOID": f"ODM.{data.study_id}.{data.generated_at:%Y%m%dT%H%M%S}",
        "CreationDateTime": _stamp(data.generated_at), "ODMVersion": "1.3.2", "Originator": "cmvtrial",
        "SourceSystem": data.source_system, "SourceSystemVersion": source_version})
    study = ET.SubElement(root, _o("Study"), {"OID": study_oid})
    variables = ET.SubElement(study, _o("GlobalVariables"))
    for tag, value in (("StudyName", data.study_id), ("StudyDescription", protocol.title), ("ProtocolName", protocol.id)):
        ET.SubElement(variables, _o(tag)).text = value
    _metadata(study, protocol, mdv)
    _admin(root, data, mdv, study_oid)
    known_units = {code for form in protocol.forms for _p, item in form.item_paths().items()
                   for code in ([item.unit] if item.unit else []) + [a.unit for a in item.alternative_units]}
    user_oids = {user.username: f"USR.{user.user_id}" for user in data.users}
    versions = _versions(data)
    clinical = ET.SubElement(root, _o("ClinicalData"), {"StudyOID": study_oid, "MetaDataVersionOID": mdv})
    forms = {form.id: form for form in protocol.forms}
    for subject in data.subjects:
        element = ET.SubElement(clinical, _o("SubjectData"), {"SubjectKey": subject.subject_id,
                                                              "TransactionType": "Insert"})
        ET.SubElement(element, _o("SiteRef"), {"LocationOID": f"LOC.{subject.site}"})
        by_visit: dict[tuple[str, int], dict[tuple[str, int], list[ExportValue]]] = defaultdict(lambda: defaultdict(list))
        for value in data.values_of(subject.key):
            item = forms[value.form].item_paths().get(value.item) if value.form in forms else None
            if item is not None and item.sdtm is not None and item.sdtm.variable in WITHHELD:
                continue  # identifying (a date of birth): pseudonymized exports leave it out
            by_visit[(value.visit_code, value.visit_index)][(value.form, value.form_repeat)].append(value)
        order = {visit.code: position for position, visit in enumerate(protocol.visits)}
        for (code, index), by_form in sorted(by_visit.items(), key=lambda pair: (order.get(pair[0][0], 99), pair[0][1])):
            attributes = {"StudyEventOID": f"SE.{code}", "TransactionType": "Insert"}
            if index:
                attributes["StudyEventRepeatKey"] = str(index)
            event = ET.SubElement(element, _o("StudyEventData"), attributes)
            for (form_id, repeat), values in by_form.items():
                form_attributes = {"FormOID": f"F.{form_id}", "TransactionType": "Insert"}
                if forms.get(form_id) is not None and forms[form_id].repeating:
                    form_attributes["FormRepeatKey"] = str(repeat + 1)
                form_element = ET.SubElement(event, _o("FormData"), form_attributes)
                groups: dict[str, ET.Element] = {}
                for value in values:
                    head, _, tail = value.item.partition(".")
                    group_oid = f"IG.{form_id}.{head}" if tail else f"IG.{form_id}"
                    if group_oid not in groups:
                        groups[group_oid] = ET.SubElement(form_element, _o("ItemGroupData"), {
                            "ItemGroupOID": group_oid, "TransactionType": "Insert"})
                    oid = f"I.{form_id}.{value.item}"
                    history = versions.get(value.value_id)
                    if not history:
                        _item_data(groups[group_oid], oid, "Insert", {"entered_value": value.entered_value,
                                                                      "entered_unit": value.entered_unit}, None,
                                   user_oids, known_units)
                        continue
                    for transaction, state, audit_event in history:
                        _item_data(groups[group_oid], oid, transaction, state, audit_event, user_oids, known_units)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
