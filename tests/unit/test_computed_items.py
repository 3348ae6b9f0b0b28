"""Computed items: the SLEDAI-2K total from its 24 weighted descriptors (reference/domain.md §7.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmvtrial.core.form_entry import computed_inputs, validate_form
from cmvtrial.core.protocol_parsing import parse_protocol
from cmvtrial.errors import InvalidInput, OutOfRange, ProtocolInvalid
from cmvtrial.protocols import load_protocol, read_shipped_text

#: domain.md §7.1, as a reader of the reference table would tally it (the test's own copy).
WEIGHTS = {8: 8, 4: 6, 2: 7, 1: 3}  # weight -> number of descriptors with it


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("sle-cmv-il2")[0]


def descriptors(protocol):
    return [item.id for item in protocol.form("sledai").items if item.type == "boolean"]


def test_the_sledai_form_has_the_24_descriptors_and_their_weights(protocol):
    names = descriptors(protocol)
    assert len(names) == 24
    assert computed_inputs(protocol.form("sledai")) == {"sledai_2k_total": frozenset(names)}
    everything = validate_form(protocol, "sledai", dict.fromkeys(names, True) | {"assessment_date": "2025-03-03"})
    assert everything.values["sledai_2k_total"].value == 105 == sum(w * n for w, n in WEIGHTS.items())
    weights = {}
    for name in names:
        alone = validate_form(protocol, "sledai", dict.fromkeys(names, False) | {name: True})
        weights[name] = alone.values["sledai_2k_total"].value
    assert sorted(weights.values(), reverse=True) == [w for w, n in WEIGHTS.items() for _ in range(n)]
    assert (weights["seizure"], weights["arthritis"], weights["rash"], weights["fever"]) == (8, 4, 2, 1)


@given(st.lists(st.booleans(), min_size=24, max_size=24))
def test_the_total_is_the_sum_of_the_ticked_weights(ticks):
    protocol = load_protocol("sle-cmv-il2")[0]
    names = descriptors(protocol)
    alone = {name: validate_form(protocol, "sledai", dict.fromkeys(names, False) | {name: True})
             .values["sledai_2k_total"].value for name in names}
    entry = validate_form(protocol, "sledai", dict(zip(names, ticks, strict=True)))
    assert entry.values["sledai_2k_total"].value == sum(alone[n] for n, t in zip(names, ticks, strict=True) if t)
    assert "sledai_2k_total" not in entry.missing_required


def test_an_entered_total_must_agree_and_stands_alone_without_descriptors(protocol):
    names = descriptors(protocol)
    ticks = dict.fromkeys(names, False) | {"seizure": True, "rash": True}
    assert validate_form(protocol, "sledai", ticks | {"sledai_2k_total": 10}).values["sledai_2k_total"].value == 10
    with pytest.raises(InvalidInput, match="disagrees with 10"):
        validate_form(protocol, "sledai", ticks | {"sledai_2k_total": 12})
    legacy = validate_form(protocol, "sledai", {"assessment_date": "2025-03-03", "sledai_2k_total": 12})
    assert legacy.values["sledai_2k_total"].value == 12 and legacy.complete
    partial = validate_form(protocol, "sledai", {"seizure": True})
    assert "sledai_2k_total" not in partial.values and "sledai_2k_total" in partial.missing_required
    with pytest.raises(OutOfRange):
        validate_form(protocol, "sledai", {"sledai_2k_total": 106})


def _with_sledai_total(expression: str) -> str:
    text = read_shipped_text("sle-cmv-il2")
    start = text.index('        computed: "')
    end = text.index("\n", start)
    return text[:start] + f'        computed: "{expression}"' + text[end:]


def test_a_computed_expression_may_only_read_the_forms_other_items():
    with pytest.raises(ProtocolInvalid) as refused:
        parse_protocol(_with_sledai_total("8*seizure + 4*sledai_2k_total + nk_pct"), source="test")
    messages = " ".join(problem["message"] for problem in refused.value.problems)
    assert "'sledai_2k_total'" in messages and "'nk_pct'" in messages


def test_only_numbers_are_computed():
    text = read_shipped_text("sle-cmv-il2").replace(
        "      - {id: assessment_date, label: Assessment date, type: date, required: true}",
        '      - {id: assessment_date, label: Assessment date, type: date, required: true, computed: "seizure"}', 1)
    with pytest.raises(ProtocolInvalid) as refused:
        parse_protocol(text, source="test")
    assert "only quantity and integer items are computed" in refused.value.problems[0]["message"]
