"""The screening record as item values of the screening form, and back (core/screening_items.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmvtrial.core.eligibility import evaluate_eligibility
from cmvtrial.core.screening_items import record_data, screening_items
from cmvtrial.core.screening_record import screening_record_from_data
from cmvtrial.protocols import load_shipped_protocol

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "screening"
GOOD = ["eligible", "eligible_iu_mg_dl", "not_eligible_nyha3", "undetermined_no_creatinine"]


def fixture(name: str) -> dict[str, object]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def stored(protocol_id: str, data: dict[str, object]):
    protocol, _ = load_shipped_protocol(protocol_id)
    return protocol, screening_items(protocol, screening_record_from_data(data), data)


@pytest.mark.parametrize("protocol_id", ["sle-cmv-il2", "nct04225780"])
@pytest.mark.parametrize("name", GOOD)
def test_the_stored_items_give_back_a_record_with_the_same_verdict(protocol_id, name):
    data = fixture(name)
    protocol, items = stored(protocol_id, data)
    again = record_data(items.values())
    assert set(again) == set(data)
    original, restored = evaluate_eligibility(protocol, data), evaluate_eligibility(protocol, again)
    assert restored.to_dict() == original.to_dict()


@settings(max_examples=60, deadline=None)
@given(st.sets(st.sampled_from(sorted(fixture("eligible"))), min_size=1))
def test_any_subset_of_keys_round_trips_exactly_apart_from_bare_ulns(keys):
    """A bare ULN comes back with its analyte's unit when the analyte is among the keys."""
    full = fixture("eligible")
    data = {key: full[key] for key in keys}
    _, items = stored("sle-cmv-il2", data)
    again = record_data(items.values())
    expected = dict(data)
    for uln, analyte in (("alt_uln", "alt"), ("ast_uln", "ast"), ("total_bilirubin_uln", "total_bilirubin")):
        if uln in data and analyte in data:
            expected[uln] = {"value": data[uln], "unit": data[analyte]["unit"]}  # type: ignore[index]
    assert again == expected


def test_quantities_keep_what_was_entered_and_the_value_in_the_items_unit():
    _, items = stored("nct04225780", fixture("eligible_iu_mg_dl"))
    cmv = items["cmv_dna"]
    assert (cmv.value_type, cmv.entered_unit, cmv.normalized_unit) == ("quantity", "[IU]/mL", "copies/mL")
    assert cmv.normalized_number == pytest.approx(json.loads(cmv.entered_value) * 1.1)
    creatinine = items["serum_creatinine"]
    assert creatinine.entered_unit == "mg/dL" and creatinine.normalized_number == json.loads(creatinine.entered_value)


def test_no_corticosteroid_is_one_group_value_and_a_taken_one_is_two_items():
    _, none_taken = stored("sle-cmv-il2", {"corticosteroid": None})
    assert list(none_taken) == ["corticosteroid"] and none_taken["corticosteroid"].normalized_text == "none"
    assert record_data(none_taken.values()) == {"corticosteroid": None}
    _, taken = stored("sle-cmv-il2", {"corticosteroid": {"drug": "prednisone", "daily_dose_mg": 7.5}})
    assert sorted(taken) == ["corticosteroid.daily_dose_mg", "corticosteroid.drug"]
    assert taken["corticosteroid.daily_dose_mg"].normalized_unit == "mg"


def test_a_bare_uln_without_its_analyte_stays_bare_with_no_normalized_value():
    _, items = stored("sle-cmv-il2", {"alt_uln": 40})
    uln = items["alt_uln"]
    assert (uln.entered_value, uln.entered_unit, uln.normalized_number, uln.normalized_unit) == ("40", None, None, "U/L")
    assert record_data(items.values()) == {"alt_uln": 40}


def test_a_null_key_yields_no_item_value():
    _, items = stored("sle-cmv-il2", {"nyha_class": None})
    assert items == {}
