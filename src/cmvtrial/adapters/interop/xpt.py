"""SAS XPORT version 5 files, the FDA's transport format, written and read with pyreadstat.

Why the limits are checked here and not left to the library: XPORT v5 allows variable names of at
most 8 characters (a letter or underscore first, then letters, digits, underscores), labels of at
most 40, dataset names of 8 and labels of 40, and character values of at most 200 bytes of
US-ASCII (../shared/reference/standards.md §3.3). A writer that silently truncated would corrupt a
submission, so :func:`xport_problems` lists every breach (dataset, variable, row, rule) and
:func:`write_xpt` refuses to write while any remains. Text is made ASCII first by transliteration
(``≥`` → ``>=``, ``µ`` → ``u``, ``ö`` → ``o``); what cannot be transliterated becomes ``?``.

Character columns are written at the width of their longest value (FDA rule as interpreted by
Pinnacle 21, standards.md §3.3) — pyreadstat sizes them that way. Reading accepts UTF-8 and falls
back to Windows-1252, as the CDISC pilot's TS file needs (data/cdiscpilot/README.md).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cmvtrial.errors import InvalidInput

MAX_NAME, MAX_LABEL, MAX_VALUE = 8, 40, 200
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRANSLITERATION = {"≥": ">=", "≤": "<=", "µ": "u", "μ": "u", "°": "deg", "×": "x", "–": "-", "—": "-",
                    "‘": "'", "’": "'", "“": '"', "”": '"', "…": "...", "±": "+/-", "ß": "ss", "→": "->"}


@dataclass(frozen=True)
class XportProblem:
    dataset: str
    variable: str | None
    row: int | None
    rule: str
    message: str

    def to_dict(self) -> dict[str, object]:
        where = self.dataset + (f".{self.variable}" if self.variable else "") + (f" row {self.row}" if self.row else "")
        return {"location": where, "dataset": self.dataset, "variable": self.variable, "row": self.row,
                "rule": self.rule, "message": self.message}


@dataclass(frozen=True, eq=False)
class DatasetFile:
    """A dataset as read from a file: its name, label, rows, and each variable's label, type and width."""

    name: str
    label: str
    frame: pd.DataFrame
    labels: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)  # "Char" | "Num"
    widths: dict[str, int] = field(default_factory=dict)
    path: str = ""
    format: str = "xpt"


def ascii_text(value: str) -> str:
    """``value`` in US-ASCII: known symbols transliterated, accents dropped, the rest ``?``."""
    if value.isascii():
        return value
    text = "".join(_TRANSLITERATION.get(char, char) for char in value)
    text = unicodedata.normalize("NFKD", text)
    return "".join(char if char.isascii() else ("" if unicodedata.combining(char) else "?") for char in text)


def xport_problems(name: str, label: str, frame: pd.DataFrame, labels: Mapping[str, str],
                   types: Mapping[str, str] | None = None) -> list[XportProblem]:
    """Every way ``frame`` would break the XPORT v5 limits (names, labels, value lengths, ASCII)."""
    problems = []
    if len(name) > MAX_NAME or not NAME_PATTERN.match(name):
        problems.append(XportProblem(name, None, None, "XPT-NAME",
                                     f"dataset name {name!r} is not 1-8 letters, digits or underscores"))
    if len(label) > MAX_LABEL:
        problems.append(XportProblem(name, None, None, "XPT-LABEL", f"dataset label is {len(label)} characters (max 40)"))
    for column in frame.columns:
        variable = str(column)
        if len(variable) > MAX_NAME or not NAME_PATTERN.match(variable):
            problems.append(XportProblem(name, variable, None, "XPT-NAME",
                                         f"variable name {variable!r} is not 1-8 letters, digits or underscores"))
        text = labels.get(variable, "")
        if len(text) > MAX_LABEL:
            problems.append(XportProblem(name, variable, None, "XPT-LABEL",
                                         f"variable label is {len(text)} characters (max 40)"))
        if (types or {}).get(variable, "Char" if frame[column].dtype == object else "Num") != "Char":
            continue
        for row, value in enumerate(frame[column].tolist(), start=1):
            if not isinstance(value, str):
                continue
            if not value.isascii():
                problems.append(XportProblem(name, variable, row, "XPT-ASCII", "value is not US-ASCII"))
            elif len(value.encode("ascii")) > MAX_VALUE:
                problems.append(XportProblem(name, variable, row, "XPT-LENGTH",
                                             f"value is {len(value)} characters (max 200)"))
    return problems


def prepared(frame: pd.DataFrame, types: Mapping[str, str]) -> pd.DataFrame:
    """The frame as XPORT stores it: text ASCII with empty strings for nulls, numbers as floats."""
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        if types.get(column) == "Num":
            out[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
        else:
            out[column] = [ascii_text(str(v)) if v is not None and not (isinstance(v, float) and v != v) else ""
                           for v in frame[column].tolist()]
    return out


def write_xpt(path: Path, name: str, label: str, frame: pd.DataFrame, labels: Mapping[str, str],
              types: Mapping[str, str]) -> None:
    """Write one dataset as XPORT v5; InvalidInput lists every limit it would break, writing nothing."""
    import pyreadstat

    data = prepared(frame, types)
    problems = xport_problems(name, ascii_text(label), data, labels, types)
    if problems:
        first = problems[0]
        raise InvalidInput(
            f"{name}.xpt cannot be written as XPORT v5: {first.message} ({first.variable or 'dataset'}"
            f"{f', row {first.row}' if first.row else ''}; {len(problems)} problem(s))",
            field="dataset", value=name, problems=[p.to_dict() for p in problems])
    pyreadstat.write_xport(data, str(path), file_label=ascii_text(label), table_name=name,
                           column_labels=[ascii_text(labels.get(c, "")) for c in data.columns], file_format_version=5)


def read_xpt(path: Path) -> DatasetFile:
    """One XPORT file (v5 or v8): UTF-8 text, else Windows-1252."""
    import pyreadstat

    try:
        frame, meta = pyreadstat.read_xport(str(path))
    except UnicodeDecodeError:
        frame, meta = pyreadstat.read_xport(str(path), encoding="cp1252")
    types = {column: ("Num" if kind == "double" else "Char") for column, kind in meta.readstat_variable_types.items()}
    labels = {column: text or "" for column, text in meta.column_names_to_labels.items()}
    name = (meta.table_name or path.stem).upper()
    return DatasetFile(name=name, label=meta.file_label or "", frame=_nulls(frame, types), labels=labels, types=types,
                       widths=dict(meta.variable_storage_width), path=str(path), format="xpt")


def _nulls(frame: pd.DataFrame, types: Mapping[str, str]) -> pd.DataFrame:
    """Empty text as None (XPORT has no null text), so checks can tell "missing" from a value."""
    out = frame.copy()
    for column in out.columns:
        if types.get(column) == "Char":
            out[column] = [None if v is None or (isinstance(v, str) and not v.strip()) else v for v in out[column]]
    return out


def as_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")
