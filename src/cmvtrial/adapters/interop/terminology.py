"""CDISC controlled terminology and the code systems the exports use: facts of the standards, not the trial.

Why a table here and not in a protocol file: these are published vocabularies (CDISC SDTM CT, HL7,
UCUM); a trial chooses *which* term applies (its route, its frequency: protocol fields) but not how
the standard spells it. Terms come from ../shared/reference/standards.md §3.4 (SDTM CT package
2015-12-18, codes stable since) unless a line says otherwise; the few terms not listed there are
marked "CT package, not in standards.md" and should be confirmed against the current package.

``CODELISTS`` drives both the export (it is written into define.xml) and ``cmvtrial sdtm check``
(a value outside a non-extensible codelist is an error, outside an extensible one a warning).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Codelist:
    """A CDISC codelist: its C-code, name, whether sponsors may extend it, and its terms."""

    code: str
    name: str
    extensible: bool
    terms: tuple[str, ...]


CODELISTS: dict[str, Codelist] = {
    "SEX": Codelist("C66731", "Sex", False, ("F", "M", "U", "UNDIFFERENTIATED")),
    "NY": Codelist("C66742", "No Yes Response", False, ("N", "NA", "U", "Y")),
    "AGEU": Codelist("C66781", "Age Unit", False, ("YEARS", "MONTHS", "WEEKS", "DAYS", "HOURS")),
    "ACN": Codelist("C66767", "Action Taken with Study Treatment", False, (
        "DOSE INCREASED", "DOSE NOT CHANGED", "DOSE REDUCED", "DRUG INTERRUPTED", "DRUG WITHDRAWN",
        "NOT APPLICABLE", "UNKNOWN")),
    "OUT": Codelist("C66768", "Outcome of Event", False, (
        "FATAL", "NOT RECOVERED/NOT RESOLVED", "RECOVERED/RESOLVED", "RECOVERED/RESOLVED WITH SEQUELAE",
        "RECOVERING/RESOLVING", "UNKNOWN")),
    "ROUTE": Codelist("C66729", "Route of Administration", True, (
        "SUBCUTANEOUS", "INTRAVENOUS", "INTRAVENOUS DRIP", "ORAL",
        "INTRAMUSCULAR")),  # INTRAMUSCULAR: CT package, not in standards.md
    "FRM": Codelist("C66726", "Pharmaceutical Dosage Form", True, (
        "INJECTION", "INJECTION, POWDER, LYOPHILIZED, FOR SOLUTION", "INJECTION, POWDER, FOR SOLUTION",
        "INJECTION, SOLUTION", "TABLET")),  # TABLET: CT package, not in standards.md
    "FREQ": Codelist("C71113", "Frequency", True, ("QD", "QOD", "BID", "ONCE", "TIW", "QW")),  # TIW, QW: CT package
    "NRIND": Codelist("C78736", "Reference Range Indicator", True, ("NORMAL", "LOW", "HIGH", "ABNORMAL")),
    "UNIT": Codelist("C71620", "Unit", True, (
        "mg/kg", "mg", "10^6 IU", "IU", "IU/mL", "copies/mL", "log10 copies/mL", "10^9/L", "/uL", "%", "g/L",
        "mL/min", "umol/L",
        # CT package, not in standards.md:
        "U/L", "kg", "cm", "C", "pg/mL", "mg/dL", "g/dL", "RATIO", "mmol/L", "mg/L", "ng/mL", "YEARS")),
    "EPOCH": Codelist("C99079", "Epoch", True, ("SCREENING", "TREATMENT", "FOLLOW-UP")),
    "NCOMPLT": Codelist("C66727", "Completion/Reason for Non-Completion", True, (  # CT package, not in standards.md
        "COMPLETED", "SCREEN FAILURE", "WITHDRAWAL BY SUBJECT", "LOST TO FOLLOW-UP", "DEATH", "ADVERSE EVENT",
        "PHYSICIAN DECISION", "OTHER")),
    "PROTMLST": Codelist("C114118", "Protocol Milestone", True, (
        "INFORMED CONSENT OBTAINED", "RANDOMIZED")),
    "DSCAT": Codelist("C74558", "Category for Disposition Event", True, (
        "DISPOSITION EVENT", "PROTOCOL MILESTONE", "OTHER EVENT")),
    "ARMNRS": Codelist("C142179", "Arm Null Reason", True, (  # CT package (SDTMIG 3.3+), not in standards.md
        "SCREEN FAILURE", "NOT ASSIGNED", "ASSIGNED, NOT TREATED", "UNPLANNED TREATMENT")),
}

#: Variables whose values come from a codelist (any domain prefix is replaced by ``--``).
VARIABLE_CODELISTS: dict[str, str] = {
    "SEX": "SEX", "AGEU": "AGEU", "DTHFL": "NY", "AESER": "NY", "AESDTH": "NY", "AESHOSP": "NY", "AESLIFE": "NY",
    "AEACN": "ACN", "AEOUT": "OUT", "EXROUTE": "ROUTE", "EXDOSFRM": "FRM", "EXDOSFRQ": "FREQ", "CMDOSFRQ": "FREQ",
    "EXDOSU": "UNIT", "CMDOSU": "UNIT", "--ORRESU": "UNIT", "--STRESU": "UNIT", "--NRIND": "NRIND",
    "--LOBXFL": "NY", "--BLFL": "NY", "SVOCCUR": "NY", "SVPRESP": "NY", "EPOCH": "EPOCH", "DSCAT": "DSCAT",
    "ARMNRS": "ARMNRS",
}

#: AEACN for an event with several study drugs whose actions differ (SDTMIG 3.4 §6.2 AE assumptions:
#: the per-drug actions then go to SUPPAE).
MULTIPLE = "MULTIPLE"

# UCUM code (cmvtrial's canonical unit) -> CDISC UNIT submission value.
UCUM_TO_CDISC: dict[str, str] = {
    "copies/mL": "copies/mL", "[IU]/mL": "IU/mL", "10*9/L": "10^9/L", "/uL": "/uL", "%": "%", "g/L": "g/L",
    "U/L": "U/L", "umol/L": "umol/L", "mg/dL": "mg/dL", "g/dL": "g/dL", "kg": "kg", "cm": "cm", "Cel": "C",
    "mg": "mg", "mg/kg": "mg/kg", "[MIU]": "10^6 IU", "[IU]": "IU", "pg/mL": "pg/mL", "mL/min": "mL/min",
    "{ratio}": "RATIO", "mmol/L": "mmol/L", "mg/L": "mg/L", "ng/mL": "ng/mL", "a": "YEARS",
}

# UCUM code -> the code FHIR carries (standards.md §4.1: annotations in braces, powers as 10*n).
UCUM_FOR_FHIR: dict[str, str] = {"copies/mL": "{copies}/mL", "[MIU]": "10*6.[IU]"}

ROUTES: dict[str, str] = {"subcutaneous": "SUBCUTANEOUS", "intravenous": "INTRAVENOUS", "oral": "ORAL",
                          "intramuscular": "INTRAMUSCULAR"}
#: Dosage form by route; the products' exact forms are UNCONFIRMED (standards.md §3.4), so the
#: generic INJECTION is used for both injected drugs.
DOSE_FORMS: dict[str, str] = {"subcutaneous": "INJECTION", "intravenous": "INJECTION", "intramuscular": "INJECTION",
                              "oral": "TABLET"}

#: The protocol's AE outcome vocabulary is CDISC OUT already; FHIR R4 adverse-event-outcome codes.
FHIR_AE_OUTCOME: dict[str, str] = {
    "RECOVERED/RESOLVED": "resolved", "RECOVERING/RESOLVING": "recovering",
    "NOT RECOVERED/NOT RESOLVED": "ongoing", "RECOVERED/RESOLVED WITH SEQUELAE": "resolvedWithSequelae",
    "FATAL": "fatal", "UNKNOWN": "unknown",
}

# Code systems (standards.md §4.1).
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MEDDRA = "http://terminology.hl7.org/CodeSystem/mdr"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
AE_OUTCOME = "http://terminology.hl7.org/CodeSystem/adverse-event-outcome"
AE_SERIOUSNESS = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
SNOMED = "http://snomed.info/sct"
#: SNOMED CT 260415000 "Not detected" (qualifier value), the usual coded answer for a negative PCR.
NOT_DETECTED = ("260415000", "Not detected")


def cdisc_unit(ucum: str | None) -> str | None:
    """The CDISC UNIT spelling of a UCUM code (the code itself when CDISC has no other spelling)."""
    if ucum is None:
        return None
    return UCUM_TO_CDISC.get(ucum, ucum)


def fhir_unit(ucum: str) -> str:
    return UCUM_FOR_FHIR.get(ucum, ucum)


def codelist_for(variable: str) -> Codelist | None:
    """The codelist a variable's values come from, by its name (``LBORRESU`` as ``--ORRESU``)."""
    name = VARIABLE_CODELISTS.get(variable) or VARIABLE_CODELISTS.get("--" + variable[2:])
    return CODELISTS.get(name) if name else None
