"""Units: every common spelling maps to one UCUM code; compatible conversions round-trip."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmvtrial.core import units
from cmvtrial.errors import UnitError


@pytest.mark.parametrize(
    ("written", "code"),
    [
        ("10^9/L", "10*9/L"),
        ("10*9/L", "10*9/L"),
        ("cells/uL", "/uL"),
        ("cells/µL", "/uL"),
        ("/uL", "/uL"),
        ("°C", "Cel"),
        ("Cel", "Cel"),
        ("µmol/L", "umol/L"),
        ("umol/L", "umol/L"),
        ("mg/dL", "mg/dL"),
        ("MG/DL", "mg/dL"),
        ("IU/mL", "[IU]/mL"),
        ("copies/mL", "copies/mL"),
        ("U/L", "U/L"),
        ("MIU", "[MIU]"),
    ],
)
def test_common_spellings_map_to_ucum(written, code):
    assert units.canonical_unit(written) == code


@pytest.mark.parametrize("bad", ["furlongs", "", "  ", "mg/dl/zz"])
def test_unknown_units_are_refused(bad):
    with pytest.raises(UnitError):
        units.canonical_unit(bad)
    assert not units.is_known_unit(bad)


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (1.0, "10^9/L", "/uL", 1000.0),  # 10^9/L = 10^3/µL
        (10.0, "g/dL", "g/L", 100.0),  # reference/domain.md §8.3: g/dL x 10 = g/L
        (1.0, "g/L", "mg/dL", 100.0),  # reference/domain.md §8.2: g/L x 100 = mg/dL
        (37.0, "Cel", "[degF]", 98.6),
        (1.0, "MIU", "IU", 1e6),
        (25_000.0, "/uL", "10*9/L", 25.0),
    ],
)
def test_compatible_conversions(value, source, target, expected):
    assert units.convert(value, source, target) == pytest.approx(expected, rel=1e-12)


def test_crossing_dimensions_is_the_protocols_job():
    # µmol/L -> mg/dL needs a molar mass and IU -> copies an assay factor: both live in the protocol.
    for source, target in [("umol/L", "mg/dL"), ("IU/mL", "copies/mL"), ("kg", "mL/min")]:
        assert not units.are_compatible(source, target)
        with pytest.raises(UnitError, match="different things"):
            units.convert(1.0, source, target)


def test_non_numeric_value_is_refused():
    with pytest.raises(UnitError):
        units.convert(float("nan"), "g/L", "mg/dL")


PAIRS = [("g/L", "mg/dL"), ("10*9/L", "/uL"), ("Cel", "[degF]"), ("kg", "g"), ("mL/min", "L")]


@given(
    value=st.floats(min_value=-1e6, max_value=1e9, allow_nan=False),
    pair=st.sampled_from(PAIRS[:4]),
)
def test_conversions_round_trip(value, pair):
    source, target = pair
    back = units.convert(units.convert(value, source, target), target, source)
    assert math.isclose(back, value, rel_tol=1e-9, abs_tol=1e-9)
