"""Write the ADaM-like datasets of the report fixture trial (tests/unit/report_support.py) as CSV.

Run from the repository root, then the R script that computes the reference values on them:

    .venv/bin/python tests/reference/report/make_datasets.py
    Rscript tests/reference/report/make_reference.R
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "unit"))

from report_support import make_trial_data  # noqa: E402

from cmvtrial.analysis.derivations import derive_datasets  # noqa: E402

datasets = derive_datasets(make_trial_data())
for name, frame in (("ADSL", datasets.adsl), ("ADTTE", datasets.adtte), ("ADLB", datasets.adlb)):
    frame.to_csv(HERE / f"{name}.csv", index=False, date_format="%Y-%m-%d")
