"""``cmvtrial sdtm check``: our own conformance rules on any folder of SDTM datasets.

Why our own: the CDISC open rules engine cannot run offline on the project's Python (its wheel has
no rules cache and needs Python 3.12; standards.md §3.6), so the checks a reviewer asks first are
implemented here, on XPORT, Dataset-JSON or CSV files, ours or anyone's. Each finding names the
dataset, variable, row (1-based record number) and rule:

==========  =======  ===========================================================================
rule        level    what
==========  =======  ===========================================================================
SD-REQ      error    a Required variable of SDTMIG 3.4 is missing from the dataset (§3.1)
SD-REQNULL  error    a Required variable is null in a record
SD-EXP      warning  an Expected variable is missing (older IGs lack some: the pilot's DM)
SD-DOMAIN   error    DOMAIN differs from the dataset's name
XPT-NAME    error    a dataset or variable name is not 1-8 letters, digits, underscores (§3.3)
XPT-LABEL   error    a dataset or variable label is over 40 characters
XPT-LENGTH  error    a character value is over 200 bytes
XPT-ASCII   warning  a character value is not US-ASCII (the pilot's TS holds a cp1252 apostrophe)
SD-USUBJID  error    USUBJID is not unique in DM, or a record names a USUBJID missing from DM
SD-SEQ      error    --SEQ is missing or repeats within a subject
SD-ISO8601  error    a --DTC value is not an ISO 8601 date/time (partial dates allowed)
SD-STRESN   error    --STRESN disagrees with --STRESC (or is missing for a numeric --STRESC)
SD-CT       error    a value outside a non-extensible CDISC codelist (SEX, NY, AGEU, ACN, OUT)
SD-CTEXT    warning  a value outside an extensible codelist we ship (UNIT, ROUTE, FREQ, EPOCH ...)
SD-DY       error    --DY (--STDY, --ENDY) is not the study day of its date counted from RFSTDTC,
                     or is 0
==========  =======  ===========================================================================

Exit codes (CLI): 0 no error (warnings allowed), 1 at least one error, 2 the folder cannot be read.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from cmvtrial.adapters.interop.dataset_files import read_folder
from cmvtrial.adapters.interop.sdtm_spec import DATASETS
from cmvtrial.adapters.interop.terminology import MULTIPLE, codelist_for
from cmvtrial.adapters.interop.xpt import DatasetFile, xport_problems

ERROR, WARNING = "error", "warning"
ISO8601 = re.compile(
    r"^(\d{4}|-)(-(\d{2}|-)(-(\d{2}|-)(T(\d{2}|-)(:(\d{2}|-)(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?)?)?$")
#: Domains whose records belong to a subject (USUBJID must be in DM).
_TRIAL_DESIGN = {"TS", "TA", "TE", "TV", "TI", "TD", "TM"}


@dataclass(frozen=True)
class Finding:
    severity: str
    dataset: str
    variable: str | None
    row: int | None
    rule: str
    message: str

    def to_dict(self) -> dict[str, object]:
        return {"severity": self.severity, "dataset": self.dataset, "variable": self.variable, "row": self.row,
                "rule": self.rule, "message": self.message}

    def line(self) -> str:
        where = self.dataset + (f".{self.variable}" if self.variable else "") + (f" row {self.row}" if self.row else "")
        return f"{self.severity.upper():7} {self.rule:10} {where}: {self.message}"


@dataclass(frozen=True)
class CheckReport:
    folder: str
    datasets: dict[str, int]
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == WARNING)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def to_dict(self) -> dict[str, object]:
        return {"folder": self.folder, "datasets": self.datasets, "errors": self.errors, "warnings": self.warnings,
                "findings": [f.to_dict() for f in self.findings]}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _full_date(text: Any) -> date | None:
    if not isinstance(text, str) or len(text) < 10:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _number(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def check_datasets(datasets: list[DatasetFile], folder: str = "") -> CheckReport:
    """Every finding over ``datasets`` (see the module docstring for the rules)."""
    findings: list[Finding] = []
    by_name = {d.name: d for d in datasets}
    dm = by_name.get("DM")
    subjects: set[str] = set()
    reference: dict[str, date] = {}
    if dm is not None and "USUBJID" in dm.frame.columns:
        counts = Counter(v for v in dm.frame["USUBJID"].tolist() if not _blank(v))
        for row, value in enumerate(dm.frame["USUBJID"].tolist(), start=1):
            if not _blank(value) and counts[value] > 1:
                findings.append(Finding(ERROR, "DM", "USUBJID", row, "SD-USUBJID", f"USUBJID {value} is not unique in DM"))
        subjects = set(counts)
        if "RFSTDTC" in dm.frame.columns:
            for usubjid, start in zip(dm.frame["USUBJID"], dm.frame["RFSTDTC"], strict=True):
                if (day := _full_date(start)) is not None:
                    reference[usubjid] = day
    for dataset in datasets:
        findings += _check_dataset(dataset, subjects if dm is not None else None, reference)
    return CheckReport(folder, {d.name: len(d.frame) for d in datasets}, tuple(findings))


def check_folder(folder: Path) -> CheckReport:
    """Read every dataset of ``folder`` and check it; InvalidInput when the folder cannot be read."""
    return check_datasets(read_folder(folder), str(folder))


def _check_dataset(dataset: DatasetFile, subjects: set[str] | None, reference: dict[str, date]) -> list[Finding]:
    name, frame = dataset.name, dataset.frame
    findings: list[Finding] = []
    columns = list(frame.columns)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for problem in xport_problems(name, dataset.label, frame, dataset.labels, dataset.types):
        severity = WARNING if problem.rule == "XPT-ASCII" else ERROR
        findings.append(Finding(severity, problem.dataset, problem.variable, problem.row, problem.rule, problem.message))
    spec = DATASETS.get(name)
    if spec is not None:
        for variable in spec.variables:
            if variable.name in columns:
                continue
            if variable.core == "Req":
                findings.append(Finding(ERROR, name, variable.name, None, "SD-REQ",
                                        f"Required variable {variable.name} ({variable.label}) is missing"))
            elif variable.core == "Exp":
                findings.append(Finding(WARNING, name, variable.name, None, "SD-EXP",
                                        f"Expected variable {variable.name} ({variable.label}) is missing"))
        required = [v.name for v in spec.variables if v.core == "Req" and v.name in columns]
        for row, record in enumerate(records, start=1):
            for variable in required:
                if _blank(record[variable]):
                    findings.append(Finding(ERROR, name, variable, row, "SD-REQNULL", "Required variable is null"))
    if "DOMAIN" in columns:
        for row, record in enumerate(records, start=1):
            if not _blank(record["DOMAIN"]) and record["DOMAIN"] != name and not name.startswith("SUPP"):
                findings.append(Finding(ERROR, name, "DOMAIN", row, "SD-DOMAIN",
                                        f"DOMAIN is {record['DOMAIN']!r}, not {name!r}"))
    if subjects is not None and "USUBJID" in columns and name != "DM" and name not in _TRIAL_DESIGN:
        for row, record in enumerate(records, start=1):
            if not _blank(record["USUBJID"]) and record["USUBJID"] not in subjects:
                findings.append(Finding(ERROR, name, "USUBJID", row, "SD-USUBJID",
                                        f"USUBJID {record['USUBJID']} is not in DM"))
    findings += _sequence(name, columns, records)
    findings += _dates(name, columns, records)
    findings += _standard_results(name, columns, records)
    findings += _terminology(name, columns, records)
    if name not in _TRIAL_DESIGN:
        findings += _study_days(name, columns, records, reference)
    return findings


def _sequence(name: str, columns: list[str], records: list[dict[str, Any]]) -> list[Finding]:
    seq = f"{name[-2:]}SEQ" if not name.startswith(("SUPP", "AD")) else None
    if seq is None or seq not in columns or "USUBJID" not in columns:
        return []
    seen: dict[tuple[Any, Any], int] = {}
    findings = []
    for row, record in enumerate(records, start=1):
        value = record[seq]
        if _blank(value):
            findings.append(Finding(ERROR, name, seq, row, "SD-SEQ", f"{seq} is missing"))
            continue
        key = (record["USUBJID"], value)
        if key in seen:
            findings.append(Finding(ERROR, name, seq, row, "SD-SEQ",
                                    f"{seq} {value:g} repeats for {record['USUBJID']} (first in row {seen[key]})"
                                    if isinstance(value, float) else f"{seq} {value} repeats for {record['USUBJID']}"))
        else:
            seen[key] = row
    return findings


def _dates(name: str, columns: list[str], records: list[dict[str, Any]]) -> list[Finding]:
    findings = []
    for column in (c for c in columns if c.endswith("DTC")):
        for row, record in enumerate(records, start=1):
            value = record[column]
            if _blank(value):
                continue
            if not isinstance(value, str) or not ISO8601.match(value.strip()) or _bad_parts(value.strip()):
                findings.append(Finding(ERROR, name, column, row, "SD-ISO8601",
                                        f"{value!r} is not an ISO 8601 date/time"))
    return findings


def _bad_parts(text: str) -> bool:
    """A full date that does not exist (2025-02-30) or a time out of range."""
    if len(text) >= 10 and "-" not in text[:4] and text[5:7].isdigit() and text[8:10].isdigit():
        try:
            date.fromisoformat(text[:10])
        except ValueError:
            return True
    if "T" in text:
        clock = re.match(r"(\d{2})(?::(\d{2}))?(?::(\d{2}))?", text.split("T", 1)[1])
        if clock:
            hour, minute, second = (int(p) if p else 0 for p in clock.groups())
            return hour > 23 or minute > 59 or second > 59
    return False


def _standard_results(name: str, columns: list[str], records: list[dict[str, Any]]) -> list[Finding]:
    prefix = name[-2:]
    text, number = f"{prefix}STRESC", f"{prefix}STRESN"
    if text not in columns or number not in columns:
        return []
    findings = []
    for row, record in enumerate(records, start=1):
        shown, value = record[text], record[number]
        parsed = _number(shown) if not _blank(shown) else None
        if not _blank(value):
            if parsed is None or not math.isclose(parsed, float(value), rel_tol=1e-9, abs_tol=1e-12):
                findings.append(Finding(ERROR, name, number, row, "SD-STRESN",
                                        f"{number} {float(value):g} does not match {text} {shown!r}"))
        elif parsed is not None:
            findings.append(Finding(ERROR, name, number, row, "SD-STRESN",
                                    f"{text} {shown!r} is numeric but {number} is null"))
    return findings


def _terminology(name: str, columns: list[str], records: list[dict[str, Any]]) -> list[Finding]:
    findings = []
    for column in columns:
        codelist = codelist_for(column)
        if codelist is None:
            continue
        allowed = set(codelist.terms) | ({MULTIPLE} if column == "AEACN" else set())
        for row, record in enumerate(records, start=1):
            value = record[column]
            if _blank(value) or value in allowed:
                continue
            if codelist.extensible:
                findings.append(Finding(WARNING, name, column, row, "SD-CTEXT",
                                        f"{value!r} is not in codelist {codelist.name} ({codelist.code}, extensible)"))
            else:
                findings.append(Finding(ERROR, name, column, row, "SD-CT",
                                        f"{value!r} is not in codelist {codelist.name} ({codelist.code})"))
    return findings


def _study_days(name: str, columns: list[str], records: list[dict[str, Any]], reference: dict[str, date]) -> list[Finding]:
    pairs = []
    for column in columns:
        for stem in ("DY", "STDY", "ENDY"):
            if column.endswith(stem) and len(column) == len(stem) + 2:
                dtc = column[:2] + {"DY": "DTC", "STDY": "STDTC", "ENDY": "ENDTC"}[stem]
                if dtc in columns:
                    pairs.append((column, dtc))
    if not pairs or "USUBJID" not in columns:
        return []
    findings = []
    grouped: dict[str, int] = defaultdict(int)
    for row, record in enumerate(records, start=1):
        start = reference.get(record["USUBJID"])
        for day_column, dtc in pairs:
            value = record[day_column]
            if _blank(value):
                continue
            if float(value) == 0:
                findings.append(Finding(ERROR, name, day_column, row, "SD-DY", "study day 0 does not exist in SDTM"))
                continue
            on = _full_date(record[dtc])
            if start is None or on is None:
                continue
            days = (on - start).days
            expected = days + 1 if days >= 0 else days
            if float(value) != expected:
                grouped[day_column] += 1
                findings.append(Finding(ERROR, name, day_column, row, "SD-DY",
                                        f"{day_column} is {float(value):g}, but {dtc} {record[dtc]} is study day "
                                        f"{expected} from RFSTDTC {start.isoformat()}"))
    return findings
