"""ADaM datasets for export: the report's ADSL, ADTTE and ADLB, with ADaMIG names and traced to SDTM.

Why not a second derivation: the report's analyses read ``analysis.derivations`` (ADSL, ADTTE,
ADLB, documented in docs/report.md); exporting anything else would let a statistician rerun
numbers the report never used. This module only adds what ADaMIG 1.3 asks of an exported dataset
(standards.md §3.2) and what ties each row to its SDTM source:

- **ADSL**: ``SUBJID``, ``ARMCD``/``ARM`` and ``ACTARMCD``/``ACTARM`` from DM, ``AGEU``, ``RACE``,
  ``COUNTRY``; ``USUBJID`` is DM's (pseudonymized) whenever the data came from the database.
- **ADTTE**: ``PARAMCD DURVIR`` with ``AVAL``, ``CNSR``, ``STARTDT``, ``ADT``, ``EVNTDESC``, and
  ``CNSDTDSC`` (what a censoring date is: the date of the last CMV-DNA assessment, or of the start
  when none followed it); ``SRCDOM``/``SRCVAR``/``SRCSEQ`` name the LB record of ``ADT``.
- **ADLB**: each row's source record (``SRCDOM`` LB, VS or QS, ``SRCVAR`` --STRESN, ``SRCSEQ``
  its --SEQ), found by subject, test code and date.

Where the data came from a simulation there is no SDTM: the extra columns are then left empty, and
subject ids stay the simulator's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cmvtrial.analysis.derivations import CMV_PARAMCD

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.adapters.interop.sdtm import SdtmPackage
    from cmvtrial.analysis.derivations import AnalysisDatasets


@dataclass(frozen=True, eq=False)
class AdamDatasets:
    adsl: pd.DataFrame
    adtte: pd.DataFrame
    adlb: pd.DataFrame

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [("ADSL", self.adsl), ("ADTTE", self.adtte), ("ADLB", self.adlb)]


def _findings_index(sdtm: SdtmPackage) -> pd.DataFrame:
    """Every findings record as (USUBJID, TESTCD, date, domain, seq) to trace ADaM rows to."""
    parts = []
    for domain in ("LB", "VS", "QS"):
        frame = sdtm.datasets.get(domain)
        if frame is None or frame.empty:
            continue
        parts.append(pd.DataFrame({
            "USUBJID": frame["USUBJID"], "TESTCD": frame[f"{domain}TESTCD"],
            "ADT": pd.to_datetime(frame[f"{domain}DTC"].str.slice(0, 10), errors="coerce"),
            "SRCDOM": domain, "SRCVAR": f"{domain}STRESN", "SRCSEQ": frame[f"{domain}SEQ"]}))
    if not parts:
        return pd.DataFrame(columns=["USUBJID", "TESTCD", "ADT", "SRCDOM", "SRCVAR", "SRCSEQ"])
    index = pd.concat(parts, ignore_index=True).dropna(subset=["ADT"])
    return index.drop_duplicates(["USUBJID", "TESTCD", "ADT"], keep="first")


def build_adam(datasets: AnalysisDatasets, *, sdtm: SdtmPackage | None = None,
               usubjids: Mapping[str, str] | None = None) -> AdamDatasets:
    """ADSL, ADTTE and ADLB of ``datasets``; ``usubjids`` maps the snapshot's subject names to
    SDTM's USUBJID and ``sdtm`` supplies DM and the findings records to trace to."""
    adsl, adtte, adlb = datasets.adsl.copy(), datasets.adtte.copy(), datasets.adlb.copy()
    if usubjids:
        for frame in (adsl, adtte, adlb):
            frame["USUBJID"] = frame["USUBJID"].map(lambda label: usubjids.get(label, label))
    if sdtm is not None:
        for frame in (adsl, adtte, adlb):
            frame["STUDYID"] = sdtm.study_id
    dm = sdtm.datasets.get("DM") if sdtm is not None else None
    columns = ["SUBJID", "ARMCD", "ARM", "ACTARMCD", "ACTARM", "AGEU", "RACE", "COUNTRY"]
    if dm is not None:
        extra = adsl[["USUBJID"]].merge(dm, on="USUBJID", how="left").reindex(columns=columns)
    else:  # a simulated trial: DM's columns from the snapshot itself
        labels = datasets.setup.arm_labels
        extra = pd.DataFrame({"SUBJID": adsl["USUBJID"], "ARMCD": adsl["TRT01P"].str.upper(),
                              "ARM": adsl["TRT01P"].map(labels), "ACTARMCD": adsl["TRT01A"].str.upper(),
                              "ACTARM": adsl["TRT01A"].map(labels), "AGEU": "YEARS", "RACE": None,
                              "COUNTRY": None}, index=adsl.index)
    adsl = pd.concat([adsl.iloc[:, :3], extra.set_axis(adsl.index), adsl.iloc[:, 3:]], axis=1)
    adsl.loc[adsl["AGE"].isna(), "AGEU"] = None

    censored = adtte["CNSR"] == 1
    adtte["CNSDTDSC"] = np.where(
        censored, np.where(adtte["ADT"] > adtte["STARTDT"], "DATE OF LAST CMV-DNA ASSESSMENT",
                           "DATE OF THE START (NO LATER CMV-DNA ASSESSMENT)"), None)
    adtte["EVNTDESC"] = np.where(censored, adtte["CNSRREAS"].fillna(adtte["EVNTDESC"]).astype(str),
                                 adtte["EVNTDESC"].astype(str))
    if sdtm is not None:
        index = _findings_index(sdtm)
        cmv = index[index["SRCDOM"] == "LB"]
        testcd = _cmv_testcd(datasets)
        if testcd is not None:
            cmv = cmv[cmv["TESTCD"] == testcd]
        traced = adtte[["USUBJID", "ADT"]].merge(cmv.drop(columns=["TESTCD"]), on=["USUBJID", "ADT"], how="left")
        for column in ("SRCDOM", "SRCVAR", "SRCSEQ"):
            adtte[column] = traced[column].to_numpy()
        adtte["SRCVAR"] = np.where(adtte["SRCDOM"].notna(), "LBDTC", None)
        codes = adlb["PARAMCD"].where(adlb["PARAMCD"] != CMV_PARAMCD, testcd or CMV_PARAMCD)
        keys = adlb[["USUBJID", "ADT"]].assign(TESTCD=codes.to_numpy())
        traced = keys.merge(index, on=["USUBJID", "TESTCD", "ADT"], how="left")
        for column in ("SRCDOM", "SRCVAR", "SRCSEQ"):
            adlb[column] = traced[column].to_numpy()
    else:
        for frame in (adtte, adlb):
            for column in ("SRCDOM", "SRCVAR", "SRCSEQ"):
                frame[column] = None
    return AdamDatasets(adsl, adtte, adlb)


def _cmv_testcd(datasets: AnalysisDatasets) -> str | None:
    item = datasets.setup.protocol.item(datasets.setup.cmv_form, datasets.setup.cmv_item)
    return item.sdtm.testcd if item.sdtm is not None else None


def to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, date_format="%Y-%m-%d")
