"""Permuted-block lists and the balance report (core/randomization.py).

The laws (issue 3, "Tests that must exist"): every complete block is balanced to the ratio; the
imbalance at any point within a stratum never exceeds half the largest block size; the same seed
gives the same list. Parameters come from the strategies, never from a trial.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmvtrial.core.randomization import (
    STREAM_RECIPE,
    HashStream,
    balance_report,
    generate_block_list,
    ratio_imbalance,
    stratum_key,
    stratum_name,
    weighted_pick,
)
from cmvtrial.errors import InvalidInput

arm_names = st.sampled_from(["il2_gcv", "gcv", "arm_c", "arm_d"])
ratios = st.dictionaries(arm_names, st.integers(1, 3), min_size=2, max_size=3)


@st.composite
def list_parameters(draw):
    ratio = draw(ratios)
    total = sum(ratio.values())
    multipliers = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    return {
        "arms_ratio": ratio,
        "block_sizes": [m * total for m in multipliers],
        "n": draw(st.integers(0, 120)),
        "seed": draw(st.one_of(st.text(min_size=1, max_size=12), st.integers(0, 2**64))),
        "stratum": draw(st.text(min_size=1, max_size=10)),
    }


def blocks_of(entries):
    grouped: dict[int, list] = {}
    for entry in entries:
        grouped.setdefault(entry.block, []).append(entry)
    return grouped


@given(list_parameters())
def test_every_complete_block_is_balanced_to_the_ratio(params):
    entries = generate_block_list(**params)
    ratio = params["arms_ratio"]
    total = sum(ratio.values())
    for block in blocks_of(entries).values():
        size = block[0].block_size
        assert size in params["block_sizes"]
        assert all(e.block_size == size for e in block)
        if len(block) == size:
            counts = Counter(e.arm for e in block)
            assert counts == {arm: weight * size // total for arm, weight in ratio.items()}


@given(list_parameters())
def test_imbalance_never_exceeds_half_the_largest_block(params):
    entries = generate_block_list(**params)
    ratio = params["arms_ratio"]
    largest = max(params["block_sizes"])
    counts: Counter[str] = Counter()
    for entry in entries:
        counts[entry.arm] += 1
        imbalance = ratio_imbalance(counts, ratio)
        # The sharper law: a block of size B holds B / sum(ratio) "ratio units" per arm.
        assert imbalance <= Fraction(largest, sum(ratio.values()))
        assert imbalance <= Fraction(largest, 2)


@given(list_parameters())
def test_same_seed_and_stratum_give_the_same_list(params):
    assert generate_block_list(**params) == generate_block_list(**params)


@given(list_parameters(), st.integers(0, 40))
def test_a_shorter_list_is_a_prefix_of_a_longer_one(params, extra):
    longer = generate_block_list(**{**params, "n": params["n"] + extra})
    assert generate_block_list(**params) == longer[: params["n"]]


@given(list_parameters())
def test_positions_are_numbered_without_gaps(params):
    entries = generate_block_list(**params)
    assert [e.sequence for e in entries] == list(range(1, params["n"] + 1))
    assert all(e.stratum == params["stratum"] for e in entries)
    block_numbers = sorted({e.block for e in entries})
    assert block_numbers == list(range(1, len(block_numbers) + 1))


def test_arm_order_in_the_mapping_does_not_change_the_list():
    forward = generate_block_list({"il2_gcv": 1, "gcv": 1}, [2, 4, 6], 40, "s", "site-1")
    backward = generate_block_list({"gcv": 1, "il2_gcv": 1}, [6, 4, 2], 40, "s", "site-1")
    assert forward == backward


def test_strata_and_seeds_get_independent_streams():
    base = generate_block_list({"a": 1, "b": 1}, [2, 4, 6], 60, "seed-1", "site-1")
    other_stratum = generate_block_list({"a": 1, "b": 1}, [2, 4, 6], 60, "seed-1", "site-2")
    other_seed = generate_block_list({"a": 1, "b": 1}, [2, 4, 6], 60, "seed-2", "site-1")
    arms = [e.arm for e in base]
    assert arms != [e.arm for e in other_stratum]
    assert arms != [e.arm for e in other_seed]


def test_integer_and_decimal_text_seed_are_the_same_seed():
    assert generate_block_list({"a": 1, "b": 1}, [4], 8, 42, "x") == generate_block_list(
        {"a": 1, "b": 1}, [4], 8, "42", "x"
    )


def test_the_list_follows_the_documented_recipe():
    """Re-derive the first block by hand from docs/randomization.md, without the module's stream:
    key = SHA-256(JSON [recipe, seed, stratum]); block i = SHA-256(key || i as 8 bytes);
    64-bit big-endian words; randbelow by rejection; size = sorted sizes[randbelow(k)];
    Fisher-Yates from the last position down over arms sorted by id."""
    seed, stratum, sizes = "audit-seed", "site-07", [2, 4, 6]
    key = hashlib.sha256(
        json.dumps([STREAM_RECIPE, seed, stratum], separators=(",", ":")).encode()
    ).digest()
    words = []
    for counter in range(4):
        digest = hashlib.sha256(key + counter.to_bytes(8, "big")).digest()
        words += [int.from_bytes(digest[i : i + 8], "big") for i in range(0, 32, 8)]
    words_iter = iter(words)

    def randbelow(n):
        limit = 2**64 - 2**64 % n
        while True:
            w = next(words_iter)
            if w < limit:
                return w % n

    size = sizes[randbelow(3)]
    block = ["gcv"] * (size // 2) + ["il2_gcv"] * (size // 2)
    for i in range(size - 1, 0, -1):
        j = randbelow(i + 1)
        block[i], block[j] = block[j], block[i]

    entries = generate_block_list({"il2_gcv": 1, "gcv": 1}, sizes, size, seed, stratum)
    assert [e.arm for e in entries] == block
    assert {e.block_size for e in entries} == {size}
    assert stratum_key(seed, stratum) == key


def test_block_sizes_are_drawn_from_the_whole_set():
    entries = generate_block_list({"a": 1, "b": 1}, [2, 4, 6], 600, "sizes", "s")
    sizes = Counter(block[0].block_size for block in blocks_of(entries).values())
    assert set(sizes) == {2, 4, 6}
    assert min(sizes.values()) > 0.2 * sum(sizes.values())


def test_unequal_ratio_blocks():
    entries = generate_block_list({"a": 2, "b": 1}, [3, 6], 90, "r", "s")
    complete = [b for b in blocks_of(entries).values() if len(b) == b[0].block_size]
    assert len(complete) >= 10
    done = Counter(e.arm for b in complete for e in b)
    assert done["a"] == 2 * done["b"]


def test_stream_is_uniform_enough_and_in_range():
    stream = HashStream.for_stratum("u", "s")
    values = [stream.random() for _ in range(4000)]
    assert all(0 <= v < 1 for v in values)
    assert abs(sum(values) / len(values) - 0.5) < 0.02
    picks = Counter(stream.randbelow(3) for _ in range(3000))
    assert set(picks) == {0, 1, 2}
    assert all(abs(c - 1000) < 120 for c in picks.values())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"arms_ratio": {"a": 1}}, "ratio"),
        ({"arms_ratio": {"a": 0, "b": 1}}, "ratio.a"),
        ({"arms_ratio": {"a": 1.5, "b": 1}}, "ratio.a"),
        ({"arms_ratio": {"a": True, "b": 1}}, "ratio.a"),
        ({"block_sizes": []}, "block_sizes"),
        ({"block_sizes": [3]}, "block_sizes"),
        ({"block_sizes": [0]}, "block_sizes"),
        ({"block_sizes": [-2]}, "block_sizes"),
        ({"n": -1}, "n"),
        ({"n": 2.5}, "n"),
        ({"seed": ""}, "seed"),
        ({"seed": None}, "seed"),
        ({"stratum": ""}, "stratum"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(kwargs, field):
    params = {"arms_ratio": {"a": 1, "b": 1}, "block_sizes": [2, 4], "n": 4, "seed": "s", "stratum": "x"}
    with pytest.raises(InvalidInput) as caught:
        generate_block_list(**{**params, **kwargs})
    assert caught.value.details["field"] == field


def test_balance_report_counts_per_stratum_and_overall():
    ratio = {"il2_gcv": 1, "gcv": 1}
    site1 = generate_block_list(ratio, [2, 4, 6], 9, "b", "site-1")
    site2 = generate_block_list(ratio, [2, 4, 6], 5, "b", "site-2")
    pairs = [(e.stratum, e.arm) for e in site1 + site2]
    report = balance_report(pairs, ratio)
    assert report.total == 14
    for stratum, entries in (("site-1", site1), ("site-2", site2)):
        expected = Counter(e.arm for e in entries)
        assert report.by_stratum[stratum] == {"gcv": expected["gcv"], "il2_gcv": expected["il2_gcv"]}
        assert report.imbalance_by_stratum[stratum] == abs(expected["gcv"] - expected["il2_gcv"])
    assert report.overall == {
        arm: report.by_stratum["site-1"][arm] + report.by_stratum["site-2"][arm] for arm in ratio
    }
    assert report.max_stratum_imbalance == max(report.imbalance_by_stratum.values())
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data


def test_balance_report_of_nothing_and_of_an_unknown_arm():
    empty = balance_report([], {"a": 1, "b": 1})
    assert empty.total == 0 and empty.overall == {"a": 0, "b": 0} and empty.max_stratum_imbalance == 0
    with pytest.raises(InvalidInput) as caught:
        balance_report([("s", "zzz")], {"a": 1, "b": 1})
    assert caught.value.details["field"] == "arm"


def test_ratio_imbalance_scales_by_weight():
    assert ratio_imbalance({"a": 4, "b": 2}, {"a": 2, "b": 1}) == 0
    assert ratio_imbalance({"a": 3, "b": 1}, {"a": 1, "b": 1}) == 2


@given(st.floats(0, 1, exclude_max=True))
def test_weighted_pick_follows_cumulative_weights(u):
    picked = weighted_pick({"b": 3, "a": 1}, u)
    assert picked == ("a" if u < 0.25 else "b")


def test_stratum_names_follow_the_protocol_order():
    assert stratum_name(["site", "steroid"], {"steroid": "high", "site": "01"}) == "site=01/steroid=high"
    assert stratum_name([], {"site": "01"}) == "all"
    with pytest.raises(InvalidInput) as caught:
        stratum_name(["site"], {})
    assert caught.value.details["field"] == "strata.site"
