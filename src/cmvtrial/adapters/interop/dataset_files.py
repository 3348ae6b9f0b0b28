"""SDTM datasets on disk: a package written as XPORT, CSV and/or Dataset-JSON with its define.xml,
and any folder of datasets read back (ours or anyone's) for ``cmvtrial sdtm check``.

Formats (``--format``): ``xpt`` (SAS XPORT v5, the submission format), ``csv`` (for people and R),
``json`` (CDISC Dataset-JSON 1.1), ``both`` (XPORT and CSV, as issue 8 names it) and ``all``; a
comma-separated list also works (``xpt,json``). File names are the dataset name in lower case
(``dm.xpt``), as submissions name them. define.xml points at the XPORT files when there are any,
else at the Dataset-JSON files, else at the CSV files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cmvtrial.adapters.interop.dataset_json import dataset_json, read_dataset_json, write_dataset_json
from cmvtrial.adapters.interop.define_xml import define_xml
from cmvtrial.adapters.interop.sdtm_spec import DATASETS
from cmvtrial.adapters.interop.xpt import DatasetFile, read_xpt, write_xpt
from cmvtrial.errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.adapters.interop.sdtm import SdtmPackage

FORMATS = ("xpt", "csv", "json")
ALIASES = {"both": ("xpt", "csv"), "all": FORMATS}


def parse_formats(text: str) -> tuple[str, ...]:
    """``xpt``, ``csv``, ``json``, ``both``, ``all`` or a comma list; InvalidInput otherwise."""
    chosen: list[str] = []
    for part in (p.strip().lower() for p in text.split(",")):
        names = ALIASES.get(part, (part,))
        for name in names:
            if name not in FORMATS:
                raise InvalidInput(f"--format must be xpt, csv, json, both (xpt and csv) or all, not '{part}'",
                                   field="format", value=text)
            if name not in chosen:
                chosen.append(name)
    if not chosen:
        raise InvalidInput("--format names no format", field="format", value=text)
    return tuple(chosen)


@dataclass(frozen=True)
class WrittenPackage:
    folder: Path
    files: tuple[Path, ...]
    datasets: dict[str, int]  # name -> rows


def write_package(package: SdtmPackage, folder: Path, formats: Iterable[str], *, generated_at: datetime,
                  source_version: str = "") -> WrittenPackage:
    """Write every dataset of ``package`` in each format, then define.xml; XPORT limits are checked
    for all datasets before the first file is written."""
    from cmvtrial.adapters.interop.xpt import prepared, xport_problems

    chosen = tuple(formats)
    meta = {name: _metadata(name, frame) for name, frame in package.datasets.items()}
    if "xpt" in chosen:
        problems = [problem for name, frame in package.datasets.items()
                    for problem in xport_problems(name, DATASETS[name].label, prepared(frame, meta[name][1]),
                                                  meta[name][0], meta[name][1])]
        if problems:
            first = problems[0]
            raise InvalidInput(f"the SDTM datasets break the XPORT v5 limits: {first.dataset}.{first.variable} "
                               f"{first.message} ({len(problems)} problem(s)); nothing was written",
                               field="format", problems=[p.to_dict() for p in problems])
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidInput(f"cannot create {folder}: {error.strerror}", field="out", value=str(folder)) from None
    files: list[Path] = []
    study_oid = f"ST.{package.study_id}"
    mdv = f"MDV.{package.study_id}.SDTMIG.3.4"
    for name, frame in package.datasets.items():
        labels, types = meta[name]
        label = DATASETS[name].label
        for kind in chosen:
            path = folder / f"{name.lower()}.{kind}"
            try:
                if kind == "xpt":
                    write_xpt(path, name, label, frame, labels, types)
                elif kind == "csv":
                    frame.to_csv(path, index=False)
                else:
                    write_dataset_json(path, dataset_json(
                        name, label, frame, labels, types, study_oid=study_oid, metadata_version_oid=mdv,
                        created=generated_at, keys=DATASETS[name].keys, source_version=source_version))
            except OSError as error:
                raise InvalidInput(f"cannot write {path}: {error.strerror}", field="out", value=str(path)) from None
            files.append(path)
    extension = next(kind for kind in ("xpt", "json", "csv") if kind in chosen)
    define = folder / "define.xml"
    define.write_text(define_xml(package, generated_at=generated_at, extension=extension,
                                 source_version=source_version), encoding="utf-8")
    files.append(define)
    return WrittenPackage(folder, tuple(files), {name: len(frame) for name, frame in package.datasets.items()})


def _metadata(name: str, frame: pd.DataFrame) -> tuple[dict[str, str], dict[str, str]]:
    spec = DATASETS[name]
    labels, types = {}, {}
    for column in frame.columns:
        variable = spec.variable(column)
        if variable is None and column.startswith("TSVAL"):
            variable = spec.variable("TSVAL")
        labels[column] = variable.label if variable is not None else column
        types[column] = variable.type if variable is not None else ("Num" if frame[column].dtype.kind == "f" else "Char")
    return labels, types


# ------------------------------------------------------------------------------------------------
# Reading a folder


def read_csv(path: Path) -> DatasetFile:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InvalidInput(f"{path.name} is not a readable CSV file: {error}", field="file", value=str(path)) from None
    types = {}
    for column in frame.columns:
        values = [v for v in frame[column] if v != ""]
        numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
        spec = DATASETS.get(path.stem.upper())
        declared = spec.variable(column) if spec is not None else None
        is_number = declared.type == "Num" if declared is not None else bool(values) and bool(numeric.notna().all())
        types[column] = "Num" if is_number else "Char"
        if is_number:
            frame[column] = pd.to_numeric(frame[column].replace("", None), errors="coerce").astype(float)
        else:
            frame[column] = [v if v != "" else None for v in frame[column]]
    return DatasetFile(name=path.stem.upper(), label="", frame=frame, labels={}, types=types,
                       widths={}, path=str(path), format="csv")


READERS = {".xpt": read_xpt, ".json": read_dataset_json, ".csv": read_csv}


def read_folder(folder: Path) -> list[DatasetFile]:
    """Every dataset in ``folder`` (XPORT preferred, then Dataset-JSON, then CSV for the same
    name); InvalidInput when the folder cannot be read or holds no dataset."""
    if not folder.exists():
        raise InvalidInput(f"{folder} does not exist", field="folder", value=str(folder))
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder", field="folder", value=str(folder))
    chosen: dict[str, Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise InvalidInput(f"cannot read {folder}: {error.strerror}", field="folder", value=str(folder)) from None
    for suffix in (".xpt", ".json", ".csv"):
        for path in entries:
            if path.suffix.lower() == suffix and path.stem.upper() not in chosen and path.is_file():
                chosen[path.stem.upper()] = path
    if not chosen:
        raise InvalidInput(f"{folder} holds no dataset (.xpt, .json or .csv)", field="folder", value=str(folder))
    found = []
    for path in chosen.values():
        try:
            found.append(READERS[path.suffix.lower()](path))
        except InvalidInput:
            raise
        except Exception as error:  # noqa: BLE001 - a damaged file from anyone: say which, never a traceback
            raise InvalidInput(f"cannot read {path.name}: {error}", field="file", value=str(path)) from None
    return found
