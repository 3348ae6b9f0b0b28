"""A subject's level of each stratification or minimization factor (core/strata.py)."""

from __future__ import annotations

from cmvtrial.core.protocol import Factor
from cmvtrial.core.strata import factor_levels

STEROID = Factor.model_validate({
    "name": "prednisone_equivalent_mg_per_kg_day",
    "levels": [
        {"code": "none", "expression": "prednisone_equivalent_mg_per_kg_day == 0"},
        {"code": "low", "expression": "prednisone_equivalent_mg_per_kg_day < 0.5"},
    ],
})
CATCH_ALL = Factor.model_validate({
    "name": "prednisone_equivalent_mg_per_kg_day",
    "levels": [{"code": "low", "expression": "prednisone_equivalent_mg_per_kg_day < 0.5"}, {"code": "high"}],
})


def test_site_is_the_sites_code_and_items_give_their_value():
    found = factor_levels([Factor(name="site"), Factor(name="sex"), Factor(name="il2_allergy")], site="PKUPH",
                          values={"sex": "F", "il2_allergy": False})
    assert found.complete and found.levels == {"site": "PKUPH", "sex": "F", "il2_allergy": "no"}


def test_the_first_true_level_is_taken_in_the_protocols_order():
    assert factor_levels([STEROID], site="X", values={"prednisone_equivalent_mg_per_kg_day": 0}).levels == {
        "prednisone_equivalent_mg_per_kg_day": "none"}
    assert factor_levels([STEROID], site="X", values={"prednisone_equivalent_mg_per_kg_day": 0.3}).levels == {
        "prednisone_equivalent_mg_per_kg_day": "low"}
    assert factor_levels([CATCH_ALL], site="X", values={"prednisone_equivalent_mg_per_kg_day": 0.9}).levels == {
        "prednisone_equivalent_mg_per_kg_day": "high"}


def test_an_unknown_value_or_no_matching_level_leaves_the_factor_missing():
    unknown = factor_levels([Factor(name="sex"), STEROID], site="X", values={"prednisone_equivalent_mg_per_kg_day": None})
    assert not unknown.complete
    assert unknown.missing == {"sex": ("sex",), "prednisone_equivalent_mg_per_kg_day": ("prednisone_equivalent_mg_per_kg_day",)}
    no_level = factor_levels([STEROID], site="X", values={"prednisone_equivalent_mg_per_kg_day": 0.9})
    assert no_level.missing == {"prednisone_equivalent_mg_per_kg_day": ("prednisone_equivalent_mg_per_kg_day",)}
    # an unknown catch-all candidate is still unknown: an earlier level might have applied
    assert not factor_levels([CATCH_ALL], site="X", values={}).complete
