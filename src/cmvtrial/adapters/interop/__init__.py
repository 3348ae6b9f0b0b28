"""Interchange with other systems: CDISC SDTM, ADaM, Define-XML, ODM and Dataset-JSON exports, our SDTM
conformance checks, and FHIR R4 lab import and export (docs/interop.md).

The modules turn the export snapshot (services/export_data.py) into files and read files from
elsewhere; none of them opens the database, and the FHIR import hands its results to
services/lab_import.py, which enters them through data entry.
"""
