"""Define-XML 2.1: the metadata of the exported SDTM datasets, every dataset and every variable.

Why written from the same tables as the data: a define.xml written by hand drifts from the files it
describes. Here each dataset of the package gets its ItemGroupDef (class, structure, keys, the file
it lives in) and each column its ItemDef (label, data type, the longest value's length, origin,
codelist), so a reviewer — or ``cmvtrial sdtm check`` — can hold the files against it. CDISC
codelists used are described with their C-codes and extensibility (terminology.py). Standards are
SDTMIG 3.4 and the SDTM CT package the terms come from; AETOXGR's scale is named in a comment as
Define-XML asks (standards.md §3.1: the CTCAE version goes in define metadata), and LBLOINC's
dictionary the same way.

Namespaces and element order follow the Define-XML 2.1 specification (ODM 1.3.2 with the
``def`` extension).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from typing import TYPE_CHECKING

from cmvtrial.adapters.interop.sdtm_spec import DATASETS
from cmvtrial.adapters.interop.terminology import CODELISTS, codelist_for

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.adapters.interop.sdtm import SdtmPackage

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
DEF_NS = "http://www.cdisc.org/ns/def/v2.1"
XLINK_NS = "http://www.w3.org/1999/xlink"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
CT_VERSION = "2015-12-18"  # the SDTM CT package the terms were taken from (standards.md §3.4)

ET.register_namespace("", ODM_NS)
ET.register_namespace("def", DEF_NS)
ET.register_namespace("xlink", XLINK_NS)


def _o(tag: str) -> str:
    return f"{{{ODM_NS}}}{tag}"


def _d(tag: str) -> str:
    return f"{{{DEF_NS}}}{tag}"


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    translated = ET.SubElement(element, _o("TranslatedText"), {XML_LANG: "en"})
    translated.text = text
    return element


def data_type(name: str, kind: str) -> str:
    if kind != "Num":
        return "datetime" if name.endswith("DTC") else "text"
    return "integer" if name.endswith(("SEQ", "DY")) or name in ("TAETORD",) else "float"


def define_xml(package: SdtmPackage, *, generated_at: datetime, extension: str = "xpt",
               source_version: str = "") -> str:
    """The define.xml text describing ``package`` (files named ``<dataset>.<extension>``)."""
    protocol = package.protocol
    study = package.study_id
    stamp = generated_at.replace(microsecond=0).isoformat()
    root = ET.Element(_o("ODM"), {
        "FileType": "Snapshot", "FileOID": f"DEFINE.{study}", "CreationDateTime": stamp, "ODMVersion": "1.3.2",
        "Originator": "cmvtrial", "SourceSystem": "cmvtrial", "SourceSystemVersion": source_version,
        _d("Context"): "Submission"})
    study_element = ET.SubElement(root, _o("Study"), {"OID": f"ST.{study}"})
    variables = ET.SubElement(study_element, _o("GlobalVariables"))
    for tag, value in (("StudyName", study), ("StudyDescription", protocol.title), ("ProtocolName", protocol.id)):
        ET.SubElement(variables, _o(tag)).text = value
    metadata = ET.SubElement(study_element, _o("MetaDataVersion"), {
        "OID": f"MDV.{study}.SDTMIG.3.4", "Name": f"{study} SDTM datasets", _d("DefineVersion"): "2.1.0",
        "Description": f"SDTM datasets of protocol {protocol.id} version {protocol.version}"})
    standards = ET.SubElement(metadata, _d("Standards"))
    ET.SubElement(standards, _d("Standard"), {"OID": "STD.SDTMIG", "Name": "SDTMIG", "Type": "IG", "Version": "3.4",
                                              "Status": "Final"})
    ET.SubElement(standards, _d("Standard"), {"OID": "STD.CT", "Name": "CDISC/NCI", "Type": "CT",
                                              "PublishingSet": "SDTM", "Version": CT_VERSION, "Status": "Final"})

    item_defs: list[ET.Element] = []
    used_codelists: dict[str, str] = {}
    comments: dict[str, str] = {}
    for name, frame in package.datasets.items():
        spec = DATASETS[name]
        group = ET.SubElement(metadata, _o("ItemGroupDef"), {
            "OID": f"IG.{name}", "Domain": name, "Name": name, "Repeating": "No" if name == "DM" else "Yes",
            "IsReferenceData": "Yes" if spec.klass == "TRIAL DESIGN" else "No", "SASDatasetName": name,
            _d("Structure"): spec.structure, "Purpose": "Tabulation", _d("StandardOID"): "STD.SDTMIG",
            _d("ArchiveLocationID"): f"LF.{name}"})
        _text(group, _o("Description"), spec.label)
        for order, column in enumerate(frame.columns, start=1):
            variable = spec.variable(column)
            attributes = {"ItemOID": f"IT.{name}.{column}", "OrderNumber": str(order),
                          "Mandatory": "Yes" if variable is not None and variable.core == "Req" else "No"}
            if column in spec.keys:
                attributes["KeySequence"] = str(spec.keys.index(column) + 1)
            ET.SubElement(group, _o("ItemRef"), attributes)
            item_defs.append(_item_def(name, column, frame, variable, used_codelists, comments))
        ET.SubElement(group, _d("Class"), {"Name": spec.klass})
        leaf = ET.SubElement(group, _d("leaf"), {"ID": f"LF.{name}", f"{{{XLINK_NS}}}href": f"{name.lower()}.{extension}"})
        ET.SubElement(leaf, _d("title")).text = f"{name.lower()}.{extension}"
    metadata.extend(item_defs)
    for key, oid in used_codelists.items():
        codelist = CODELISTS[key]
        element = ET.SubElement(metadata, _o("CodeList"), {
            "OID": oid, "Name": codelist.name, "DataType": "text", _d("StandardOID"): "STD.CT"})
        for order, term in enumerate(codelist.terms, start=1):
            ET.SubElement(element, _o("EnumeratedItem"), {"CodedValue": term, "OrderNumber": str(order)})
        ET.SubElement(element, _o("Alias"), {"Context": "nci:ExtCodeID", "Name": codelist.code})
    for oid, text in comments.items():
        comment = ET.SubElement(metadata, _d("CommentDef"), {"OID": oid})
        _text(comment, _o("Description"), text)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _item_def(name: str, column: str, frame: object, variable: object, used_codelists: dict[str, str],
              comments: dict[str, str]) -> ET.Element:
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    kind = variable.type if variable is not None else ("Num" if frame[column].dtype.kind == "f" else "Char")  # type: ignore[attr-defined]
    label = variable.label if variable is not None else column  # type: ignore[attr-defined]
    dtype = data_type(column, kind)
    attributes = {"OID": f"IT.{name}.{column}", "Name": column, "DataType": dtype, "SASFieldName": column}
    if dtype in ("text", "datetime"):
        lengths = [len(str(v)) for v in frame[column].tolist() if v is not None and not (isinstance(v, float) and v != v)]
        attributes["Length"] = str(max(lengths, default=1))
    elif dtype == "integer":
        attributes["Length"] = "8"
    else:
        attributes["Length"] = "8"
        attributes["SignificantDigits"] = "3"
    if column == "AETOXGR":
        comments["COM.AETOXGR"] = "Grade of the NCI CTCAE version named in TS and the protocol (CTCAE v5.0)."
        attributes[_d("CommentOID")] = "COM.AETOXGR"
    elif column == "LBLOINC":
        comments["COM.LBLOINC"] = "LOINC code of the test as the protocol item names it (LOINC, Regenstrief)."
        attributes[_d("CommentOID")] = "COM.LBLOINC"
    element = ET.Element(_o("ItemDef"), attributes)
    _text(element, _o("Description"), label)
    codelist = codelist_for(column)
    if codelist is not None:
        key = next(k for k, c in CODELISTS.items() if c is codelist)
        used_codelists.setdefault(key, f"CL.{key}")
        ET.SubElement(element, _o("CodeListRef"), {"CodeListOID": used_codelists[key]})
    origin = variable.origin if variable is not None else "Derived"  # type: ignore[attr-defined]
    attributes = {"Type": origin}
    if origin == "Collected":
        attributes["Source"] = "Investigator"
    elif origin in ("Assigned", "Derived", "Protocol"):
        attributes["Source"] = "Sponsor"
    ET.SubElement(element, _d("Origin"), attributes)
    return element
