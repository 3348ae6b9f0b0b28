"""The SDTMIG 3.4 datasets cmvtrial writes: each variable's label, type, core and origin, as data.

Why one table: the writer (sdtm.py) orders and labels columns from it, define.xml describes exactly
these variables, and ``cmvtrial sdtm check`` tests any folder's datasets against the Required and
Expected variables listed here (../shared/reference/standards.md §3.1, from the SDTMIG v3.4
variable metadata). Labels are the SDTMIG's, at most 40 characters (XPORT v5, §3.3).

``core``: ``Req`` (must be present and never null), ``Exp`` (must be present, may be null), ``Perm``.
``origin``: Define-XML 2.1 origin type — Collected, Derived, Assigned or Protocol.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    type: str  # "Char" | "Num"
    core: str  # "Req" | "Exp" | "Perm"
    origin: str = "Collected"


@dataclass(frozen=True)
class Dataset:
    name: str
    label: str
    klass: str  # SDTM observation class, as define.xml's def:Class
    structure: str
    keys: tuple[str, ...]
    variables: tuple[Variable, ...]

    def variable(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)


def _v(name: str, label: str, kind: str = "Char", core: str = "Perm", origin: str = "Collected") -> Variable:
    return Variable(name, label, kind, core, origin)


_IDS = (
    _v("STUDYID", "Study Identifier", core="Req", origin="Assigned"),
    _v("DOMAIN", "Domain Abbreviation", core="Req", origin="Assigned"),
)
_SUBJECT = (*_IDS, _v("USUBJID", "Unique Subject Identifier", core="Req", origin="Assigned"))


def _seq(prefix: str) -> Variable:
    return _v(f"{prefix}SEQ", "Sequence Number", "Num", "Req", "Derived")


def _timing(prefix: str, *, dtc_core: str = "Exp") -> tuple[Variable, ...]:
    return (
        _v("VISITNUM", "Visit Number", "Num", "Exp", "Derived"),
        _v("VISIT", "Visit Name", origin="Derived"),
        _v("EPOCH", "Epoch", origin="Derived"),
        _v(f"{prefix}DTC", "Date/Time of Specimen Collection" if prefix == "LB" else
           "Date/Time of Measurements" if prefix == "VS" else "Date/Time of Finding", core=dtc_core),
        _v(f"{prefix}DY", "Study Day of Specimen Collection" if prefix == "LB" else
           "Study Day of Vital Signs" if prefix == "VS" else "Study Day of Finding", "Num", origin="Derived"),
    )


def findings(prefix: str, label: str, test_label: str) -> Dataset:
    """A findings domain (LB, VS, QS) built from the protocol's items with an SDTM test code."""
    variables = (
        *_SUBJECT, _seq(prefix),
        _v(f"{prefix}TESTCD", f"{test_label} Short Name"[:40], core="Req", origin="Assigned"),
        _v(f"{prefix}TEST", f"{test_label} Name"[:40], core="Req", origin="Assigned"),
        _v(f"{prefix}CAT", f"Category for {test_label}"[:40], core="Req" if prefix == "QS" else "Exp",
           origin="Assigned"),
        _v(f"{prefix}ORRES", "Result or Finding in Original Units", core="Exp"),
        _v(f"{prefix}ORRESU", "Original Units", core="Exp"),
        _v(f"{prefix}ORNRLO", "Reference Range Lower Limit in Orig Unit", core="Exp" if prefix == "LB" else "Perm"),
        _v(f"{prefix}ORNRHI", "Reference Range Upper Limit in Orig Unit", core="Exp" if prefix == "LB" else "Perm"),
        _v(f"{prefix}STRESC", "Character Result/Finding in Std Format", core="Exp", origin="Derived"),
        _v(f"{prefix}STRESN", "Numeric Result/Finding in Standard Units", "Num", "Exp", "Derived"),
        _v(f"{prefix}STRESU", "Standard Units", core="Exp", origin="Derived"),
        _v(f"{prefix}STNRLO", "Reference Range Lower Limit-Std Units", "Num",
           "Exp" if prefix == "LB" else "Perm", "Derived"),
        _v(f"{prefix}STNRHI", "Reference Range Upper Limit-Std Units", "Num",
           "Exp" if prefix == "LB" else "Perm", "Derived"),
        _v(f"{prefix}NRIND", "Reference Range Indicator", core="Exp" if prefix == "LB" else "Perm", origin="Derived"),
        _v(f"{prefix}STAT", "Completion Status"),
        _v(f"{prefix}REASND", "Reason Not Done"),
        _v(f"{prefix}LOINC", "LOINC Code", origin="Assigned") if prefix == "LB" else None,
        _v(f"{prefix}SPEC", "Specimen Type", origin="Protocol") if prefix == "LB" else None,
        _v(f"{prefix}LOBXFL", "Last Observation Before Exposure Flag", core="Exp" if prefix in ("LB", "VS") else "Perm",
           origin="Derived"),
        *_timing(prefix),
    )
    return Dataset(prefix, label, "FINDINGS", "One record per test per visit per subject",
                   ("STUDYID", "USUBJID", f"{prefix}TESTCD", "VISITNUM", f"{prefix}DTC"),
                   tuple(v for v in variables if v is not None))


DATASETS: dict[str, Dataset] = {
    "TS": Dataset("TS", "Trial Summary", "TRIAL DESIGN", "One record per trial summary parameter value",
                  ("STUDYID", "TSPARMCD", "TSSEQ"), (
                      *_IDS, _v("TSSEQ", "Sequence Number", "Num", "Req", "Derived"),
                      _v("TSPARMCD", "Trial Summary Parameter Short Name", core="Req", origin="Assigned"),
                      _v("TSPARM", "Trial Summary Parameter", core="Req", origin="Assigned"),
                      _v("TSVAL", "Parameter Value", core="Exp", origin="Protocol"),
                      _v("TSVALCD", "Parameter Value Code", core="Exp", origin="Assigned"),
                      _v("TSVCDREF", "Name of the Reference Terminology", core="Exp", origin="Assigned"),
                      _v("TSVCDVER", "Version of the Reference Terminology", core="Exp", origin="Assigned"))),
    "TA": Dataset("TA", "Trial Arms", "TRIAL DESIGN", "One record per planned Element per Arm",
                  ("STUDYID", "ARMCD", "TAETORD"), (
                      *_IDS, _v("ARMCD", "Planned Arm Code", core="Req", origin="Protocol"),
                      _v("ARM", "Description of Planned Arm", core="Req", origin="Protocol"),
                      _v("TAETORD", "Planned Order of Element within Arm", "Num", "Req", "Protocol"),
                      _v("ETCD", "Element Code", core="Req", origin="Protocol"),
                      _v("ELEMENT", "Description of Element", origin="Protocol"),
                      _v("TABRANCH", "Branch", core="Exp", origin="Protocol"),
                      _v("TATRANS", "Transition Rule", core="Exp", origin="Protocol"),
                      _v("EPOCH", "Epoch", core="Req", origin="Protocol"))),
    "TE": Dataset("TE", "Trial Elements", "TRIAL DESIGN", "One record per planned Element", ("STUDYID", "ETCD"), (
        *_IDS, _v("ETCD", "Element Code", core="Req", origin="Protocol"),
        _v("ELEMENT", "Description of Element", core="Req", origin="Protocol"),
        _v("TESTRL", "Rule for Start of Element", core="Req", origin="Protocol"),
        _v("TEENRL", "Rule for End of Element", origin="Protocol"),
        _v("TEDUR", "Planned Duration of Element", origin="Protocol"))),
    "TV": Dataset("TV", "Trial Visits", "TRIAL DESIGN", "One record per planned Visit per Arm",
                  ("STUDYID", "VISITNUM", "ARMCD"), (
                      *_IDS, _v("VISITNUM", "Visit Number", "Num", "Req", "Protocol"),
                      _v("VISIT", "Visit Name", origin="Protocol"),
                      _v("VISITDY", "Planned Study Day of Visit", "Num", origin="Protocol"),
                      _v("ARMCD", "Planned Arm Code", core="Exp", origin="Protocol"),
                      _v("TVSTRL", "Visit Start Rule", core="Req", origin="Protocol"),
                      _v("TVENRL", "Visit End Rule", origin="Protocol"))),
    "DM": Dataset("DM", "Demographics", "SPECIAL PURPOSE", "One record per subject", ("STUDYID", "USUBJID"), (
        *_SUBJECT, _v("SUBJID", "Subject Identifier for the Study", core="Req", origin="Assigned"),
        _v("RFSTDTC", "Subject Reference Start Date/Time", core="Exp", origin="Derived"),
        _v("RFENDTC", "Subject Reference End Date/Time", core="Exp", origin="Derived"),
        _v("RFXSTDTC", "Date/Time of First Study Treatment", core="Exp", origin="Derived"),
        _v("RFXENDTC", "Date/Time of Last Study Treatment", core="Exp", origin="Derived"),
        _v("RFICDTC", "Date/Time of Informed Consent", core="Exp"),
        _v("RFPENDTC", "Date/Time of End of Participation", core="Exp", origin="Derived"),
        _v("DTHDTC", "Date/Time of Death", core="Exp", origin="Derived"),
        _v("DTHFL", "Subject Death Flag", core="Exp", origin="Derived"),
        _v("SITEID", "Study Site Identifier", core="Req", origin="Assigned"),
        _v("AGE", "Age", "Num", "Exp", "Derived"),
        _v("AGEU", "Age Units", core="Exp", origin="Assigned"),
        _v("SEX", "Sex", core="Req"),
        _v("RACE", "Race", core="Exp"),
        _v("ARMCD", "Planned Arm Code", core="Exp", origin="Assigned"),
        _v("ARM", "Description of Planned Arm", core="Exp", origin="Assigned"),
        _v("ACTARMCD", "Actual Arm Code", core="Exp", origin="Derived"),
        _v("ACTARM", "Description of Actual Arm", core="Exp", origin="Derived"),
        _v("ARMNRS", "Reason Arm and/or Actual Arm is Null", core="Exp", origin="Derived"),
        _v("ACTARMUD", "Description of Unplanned Actual Arm", core="Exp", origin="Derived"),
        _v("COUNTRY", "Country", core="Req", origin="Protocol"),
        _v("DMDTC", "Date/Time of Collection"),
        _v("DMDY", "Study Day of Collection", "Num", origin="Derived"))),
    "DS": Dataset("DS", "Disposition", "EVENTS", "One record per disposition status or protocol milestone per subject",
                  ("STUDYID", "USUBJID", "DSDECOD", "DSSTDTC"), (
                      *_SUBJECT, _seq("DS"),
                      _v("DSTERM", "Reported Term for the Disposition Event", core="Req"),
                      _v("DSDECOD", "Standardized Disposition Term", core="Req", origin="Assigned"),
                      _v("DSCAT", "Category for Disposition Event", core="Exp", origin="Assigned"),
                      _v("EPOCH", "Epoch", origin="Derived"),
                      _v("DSSTDTC", "Start Date/Time of Disposition Event", core="Exp"),
                      _v("DSSTDY", "Study Day of Start of Disposition Event", "Num", "Exp", "Derived"))),
    "SV": Dataset("SV", "Subject Visits", "SPECIAL PURPOSE", "One record per actual or planned visit per subject",
                  ("STUDYID", "USUBJID", "VISITNUM"), (
                      *_SUBJECT, _v("VISITNUM", "Visit Number", "Num", "Req", "Derived"),
                      _v("VISIT", "Visit Name", origin="Derived"),
                      _v("SVPRESP", "Pre-specified", core="Exp", origin="Assigned"),
                      _v("SVOCCUR", "Occurrence", core="Exp"),
                      _v("SVREASOC", "Reason for Occur Value"),
                      _v("EPOCH", "Epoch", origin="Derived"),
                      _v("SVSTDTC", "Start Date/Time of Observation", core="Exp"),
                      _v("SVENDTC", "End Date/Time of Observation", core="Exp"),
                      _v("SVSTDY", "Study Day of Start of Observation", "Num", origin="Derived"),
                      _v("SVENDY", "Study Day of End of Observation", "Num", origin="Derived"))),
    "EX": Dataset("EX", "Exposure", "INTERVENTIONS", "One record per constant dosing interval per subject",
                  ("STUDYID", "USUBJID", "EXTRT", "EXSTDTC"), (
                      *_SUBJECT, _seq("EX"),
                      _v("EXTRT", "Name of Treatment", core="Req"),
                      _v("EXDOSE", "Dose", "Num", "Exp"),
                      _v("EXDOSU", "Dose Units", core="Exp"),
                      _v("EXDOSFRM", "Dose Form", core="Exp", origin="Protocol"),
                      _v("EXDOSFRQ", "Dosing Frequency per Interval", origin="Protocol"),
                      _v("EXROUTE", "Route of Administration"),
                      _v("VISITNUM", "Visit Number", "Num", origin="Derived"),
                      _v("EPOCH", "Epoch", origin="Derived"),
                      _v("EXSTDTC", "Start Date/Time of Treatment", core="Exp"),
                      _v("EXENDTC", "End Date/Time of Treatment", core="Exp"),
                      _v("EXSTDY", "Study Day of Start of Treatment", "Num", origin="Derived"),
                      _v("EXENDY", "Study Day of End of Treatment", "Num", origin="Derived"))),
    "AE": Dataset("AE", "Adverse Events", "EVENTS", "One record per adverse event per subject",
                  ("STUDYID", "USUBJID", "AEDECOD", "AESTDTC"), (
                      *_SUBJECT, _seq("AE"),
                      _v("AESPID", "Sponsor-Defined Identifier"),
                      _v("AETERM", "Reported Term for the Adverse Event", core="Req"),
                      _v("AELLT", "Lowest Level Term", core="Exp", origin="Assigned"),
                      _v("AELLTCD", "Lowest Level Term Code", "Num", "Exp", "Assigned"),
                      _v("AEDECOD", "Dictionary-Derived Term", core="Req", origin="Assigned"),
                      _v("AEPTCD", "Preferred Term Code", "Num", "Exp", "Assigned"),
                      _v("AEHLT", "High Level Term", core="Exp", origin="Assigned"),
                      _v("AEHLTCD", "High Level Term Code", "Num", "Exp", "Assigned"),
                      _v("AEHLGT", "High Level Group Term", core="Exp", origin="Assigned"),
                      _v("AEHLGTCD", "High Level Group Term Code", "Num", "Exp", "Assigned"),
                      _v("AEBODSYS", "Body System or Organ Class", core="Exp", origin="Assigned"),
                      _v("AEBDSYCD", "Body System or Organ Class Code", "Num", "Exp", "Assigned"),
                      _v("AESOC", "Primary System Organ Class", core="Exp", origin="Assigned"),
                      _v("AESOCCD", "Primary System Organ Class Code", "Num", "Exp", "Assigned"),
                      _v("AESER", "Serious Event", core="Exp"),
                      _v("AEACN", "Action Taken with Study Treatment", core="Exp"),
                      _v("AEREL", "Causality", core="Exp"),
                      _v("AEOUT", "Outcome of Adverse Event"),
                      _v("AESDTH", "Results in Death"),
                      _v("AESHOSP", "Requires or Prolongs Hospitalization"),
                      _v("AESLIFE", "Is Life Threatening"),
                      _v("AESDISAB", "Persist or Signif Disability/Incapacity"),
                      _v("AESCONG", "Congenital Anomaly or Birth Defect"),
                      _v("AESMIE", "Other Medically Important Serious Event"),
                      _v("AETOXGR", "Standard Toxicity Grade"),
                      _v("EPOCH", "Epoch", origin="Derived"),
                      _v("AESTDTC", "Start Date/Time of Adverse Event", core="Exp"),
                      _v("AEENDTC", "End Date/Time of Adverse Event", core="Exp"),
                      _v("AESTDY", "Study Day of Start of Adverse Event", "Num", origin="Derived"),
                      _v("AEENDY", "Study Day of End of Adverse Event", "Num", origin="Derived"))),
    "CM": Dataset("CM", "Concomitant/Concurrent Medications", "INTERVENTIONS",
                  "One record per recorded intervention occurrence per subject", ("STUDYID", "USUBJID", "CMTRT", "CMSTDTC"), (
                      *_SUBJECT, _seq("CM"),
                      _v("CMTRT", "Reported Name of Drug, Med, or Therapy", core="Req"),
                      _v("CMCAT", "Category for Medication", origin="Assigned"),
                      _v("CMDOSE", "Dose per Administration", "Num"),
                      _v("CMDOSU", "Dose Units", origin="Assigned"),
                      _v("CMDOSFRQ", "Dosing Frequency per Interval", origin="Assigned"),
                      _v("VISITNUM", "Visit Number", "Num", origin="Derived"),
                      _v("EPOCH", "Epoch", origin="Derived"),
                      _v("CMSTDTC", "Start Date/Time of Medication"),
                      _v("CMENDTC", "End Date/Time of Medication"),
                      _v("CMENRF", "End Relative to Reference Period", origin="Derived"),
                      _v("CMSTDY", "Study Day of Start of Medication", "Num", origin="Derived"),
                      _v("CMENDY", "Study Day of End of Medication", "Num", origin="Derived"))),
    "MH": Dataset("MH", "Medical History", "EVENTS", "One record per medical history event per subject",
                  ("STUDYID", "USUBJID", "MHTERM"), (
                      *_SUBJECT, _seq("MH"),
                      _v("MHTERM", "Reported Term for the Medical History", core="Req"),
                      _v("MHCAT", "Category for Medical History", origin="Assigned"),
                      _v("MHPRESP", "Medical History Event Pre-Specified", origin="Assigned"),
                      _v("MHOCCUR", "Medical History Occurrence"),
                      _v("EPOCH", "Epoch", origin="Derived"),
                      _v("MHDTC", "Date/Time of History Collection"),
                      _v("MHDY", "Study Day of History Collection", "Num", origin="Derived"))),
    "LB": findings("LB", "Laboratory Test Results", "Lab Test or Examination"),
    "VS": findings("VS", "Vital Signs", "Vital Signs Test"),
    "QS": findings("QS", "Questionnaires", "Question"),
}

#: The order datasets are written and described in (trial design first, then subjects).
ORDER: tuple[str, ...] = ("TS", "TA", "TE", "TV", "DM", "DS", "SV", "EX", "AE", "CM", "MH", "LB", "VS", "QS")
