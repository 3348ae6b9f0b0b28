"""The expression evaluator: sandboxed, three-valued (Kleene) logic, names and used values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmvtrial.core.expressions import compile_expression
from cmvtrial.errors import InvalidInput


def value(text: str, **values: object) -> object:
    return compile_expression(text).evaluate(values).value


# --- compiling ---------------------------------------------------------------------------------


def test_names_are_collected_including_dotted_group_items():
    compiled = compile_expression("18 <= age_years <= 70 and corticosteroid.drug == 'prednisone' and len(x) > 0")
    assert compiled.names == frozenset({"age_years", "corticosteroid.drug", "x"})
    assert compiled.text == "18 <= age_years <= 70 and corticosteroid.drug == 'prednisone' and len(x) > 0"


def test_compiling_is_cached():
    assert compile_expression("a > 1") is compile_expression("a > 1")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a >", "not valid"),
        ("", "required"),
        ("   ", "required"),
        ("__import__('os')", "unknown function '__import__'"),
        ("open('x')", "unknown function 'open'"),
        ("a.b()", "unknown function"),
        ("a[0]", "Subscript is not allowed"),
        ("[i for i in a]", "ListComp is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("{'a': 1}", "Dict is not allowed"),
        ("f'{a}'", "JoinedStr is not allowed"),
        ("a ^ 2", "'^' is not a power"),
        ("a is None", "use '=='"),
        ("None", "constant None is not allowed"),
        ("len", "is a function"),
        ("(1).real", "only names can have dotted parts"),
        ("min(a, key=b)", "positional arguments only"),
        ("a = 1", "not valid"),
    ],
)
def test_anything_outside_the_subset_is_refused_at_compile_time(text, fragment):
    with pytest.raises(InvalidInput) as raised:
        compile_expression(text)
    assert fragment in raised.value.message


# --- evaluating known values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("18 <= age <= 70", {"age": 18}, True),
        ("18 <= age <= 70", {"age": 70}, True),
        ("18 <= age <= 70", {"age": 71}, False),
        ("cmv > 1000", {"cmv": 1000}, False),
        ("cmv > 1000", {"cmv": 1000.5}, True),
        ("diagnosis in ('SLE', 'RA')", {"diagnosis": "RA"}, True),
        ("diagnosis not in ('SLE', 'RA')", {"diagnosis": "RA"}, False),
        ("len(infections) > 0", {"infections": []}, False),
        ("any_of(infections, ['hiv', 'hbv'])", {"infections": ["ebv", "hbv"]}, True),
        ("count_of(infections, ['hiv', 'hbv'])", {"infections": ["hiv", "hbv", "ebv"]}, 2),
        ("a * 2 + b / 4 - c ** 2 // 1 % 5", {"a": 1, "b": 2, "c": 1}, 1.5),
        ("-a if a < 0 else a", {"a": -3}, 3),
        ("max(a, b) - min(a, b) + abs(-1) + round(2.6)", {"a": 1, "b": 4}, 7),
        ("not flag", {"flag": False}, True),
        ("137 * 1.1 > a", {"a": 150}, True),
        ("corticosteroid.drug == 'prednisone'", {"corticosteroid": {"drug": "prednisone"}}, True),
        ("corticosteroid.drug == 'prednisone'", {"corticosteroid.drug": "prednisone"}, True),
    ],
)
def test_known_values(text, values, expected):
    result = compile_expression(text).evaluate(values)
    assert result.value == expected
    assert result.known and result.missing == frozenset()


def test_used_lists_the_values_read():
    result = compile_expression("alt_x_uln > 3 or ast_x_uln > 3").evaluate({"alt_x_uln": 1.2, "ast_x_uln": 4.0})
    assert result.used == {"alt_x_uln": 1.2, "ast_x_uln": 4.0}


# --- unknowns and Kleene logic -------------------------------------------------------------------


def test_a_missing_name_makes_a_comparison_unknown():
    result = compile_expression("creatinine_clearance_ml_min <= 30").evaluate({})
    assert result.value is None and not result.known
    assert result.missing == frozenset({"creatinine_clearance_ml_min"})


def test_none_counts_as_missing():
    result = compile_expression("nyha_class >= 3").evaluate({"nyha_class": None})
    assert result.value is None and result.missing == frozenset({"nyha_class"})


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("a and b", {"a": False}, False),  # False and unknown
        ("b and a", {"a": False}, False),  # unknown and False
        ("a and b", {"a": True}, None),  # True and unknown
        ("a or b", {"a": True}, True),  # True or unknown
        ("b or a", {"a": True}, True),  # unknown or True
        ("a or b", {"a": False}, None),  # False or unknown
        ("not b", {}, None),
        ("b + 1 > 2", {}, None),
        ("-b < 0", {}, None),
        ("len(b) > 0", {}, None),
        ("18 <= b <= 70", {}, None),
        ("100 <= a <= b", {"a": 5}, False),  # the known link of the chain decides
        ("1 <= a <= b", {"a": 5}, None),
        ("x if b else y", {"x": 1, "y": 2}, None),
        ("a in (b, 3)", {"a": 3}, True),  # found among the known members
        ("a in (b, 3)", {"a": 4}, None),  # could be b
        ("a not in (b, 3)", {"a": 3}, False),
        ("max(a, b) > 1", {"a": 5}, None),
    ],
)
def test_kleene_logic(text, values, expected):
    assert value(text, **values) == expected if expected is not None else value(text, **values) is None


def test_missing_is_reported_only_when_it_leaves_the_answer_unknown():
    decided = compile_expression("nyha >= 3 or crcl <= 30").evaluate({"crcl": 20})
    assert decided.value is True and decided.missing == frozenset()
    undecided = compile_expression("nyha >= 3 or crcl <= 30").evaluate({"crcl": 80})
    assert undecided.value is None and undecided.missing == frozenset({"nyha"})


def test_values_that_do_not_fit_the_expression_are_bad_input():
    with pytest.raises(InvalidInput, match="cannot be evaluated"):
        compile_expression("a > 3").evaluate({"a": "text"})
    with pytest.raises(InvalidInput, match="cannot be evaluated"):
        compile_expression("a / b").evaluate({"a": 1, "b": 0})
    with pytest.raises(InvalidInput, match="cannot be evaluated"):
        compile_expression("a ** b").evaluate({"a": 10, "b": 10**7})


def test_name_literals_pair_names_with_the_text_they_are_compared_with():
    compiled = compile_expression("diagnosis in ('SLE', 'RA') and sex == 'F' and any_of(inf, ['hiv']) and a > 'z'")
    assert set(compiled.name_literals()) == {("diagnosis", "SLE"), ("diagnosis", "RA"), ("sex", "F"), ("inf", "hiv")}


# --- laws (hypothesis) ---------------------------------------------------------------------------

truth = st.sampled_from([True, False, None])  # None = missing


def kleene_and(a, b):
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def kleene_or(a, b):
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


def present(**values):
    return {name: v for name, v in values.items() if v is not None}


@given(truth, truth)
def test_and_or_follow_kleene_truth_tables(a, b):
    values = present(a=a, b=b)
    assert value("a and b", **values) == kleene_and(a, b)
    assert value("a or b", **values) == kleene_or(a, b)
    assert value("b and a", **values) == kleene_and(b, a)


@given(truth, truth)
def test_de_morgan_holds_with_unknowns(a, b):
    values = present(a=a, b=b)
    assert value("not (a and b)", **values) == value("not a or not b", **values)
    assert value("not (a or b)", **values) == value("not a and not b", **values)


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(-100, 100)), st.integers(-100, 100))
def test_a_known_verdict_never_changes_when_missing_values_arrive(known, filler):
    """Monotonicity: filling in missing names can turn unknown into an answer, never flip an answer."""
    compiled = compile_expression("a > 10 or (b < 0 and c >= a)")
    partial = compiled.evaluate(known).value
    complete = compiled.evaluate({name: known.get(name, filler) for name in ("a", "b", "c")}).value
    assert complete is not None
    if partial is not None:
        assert partial == complete


@given(st.integers(-1000, 1000), st.integers(-1000, 1000), st.integers(-1000, 1000))
def test_known_values_agree_with_python(a, b, c):
    for text in ("a < b <= c", "a + b * c", "a - b > c or a == c", "not (a >= b) and c != a", "abs(a) // 7"):
        assert value(text, a=a, b=b, c=c) == eval(text, {"abs": abs}, {"a": a, "b": b, "c": c})  # noqa: S307


def test_a_reused_evaluator_keeps_nothing_from_the_last_evaluation():
    """Each thread keeps one evaluator (core/expressions.py); what one evaluation used or missed,
    and a refusal half-way, must not leak into the next."""
    compiled = compile_expression("a > 1 and b > 1")
    first = compiled.evaluate({"a": 2})
    assert first.value is None and first.missing == frozenset({"b"}) and first.used == {"a": 2}
    with pytest.raises(InvalidInput):
        compiled.evaluate({"a": "text", "b": 2})
    second = compiled.evaluate({"a": 2, "b": 3})
    assert second.value is True and second.missing == frozenset() and second.used == {"a": 2, "b": 3}
    assert first.used == {"a": 2}  # the earlier result keeps its own record


def test_evaluations_in_several_threads_do_not_mix():
    from concurrent.futures import ThreadPoolExecutor

    compiled = compile_expression("x * 2 == y")
    cases = [({"x": n, "y": 2 * n if n % 3 else n}, n % 3 != 0) for n in range(1, 400)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda case: compiled.evaluate(case[0]).value, cases))
    assert answers == [expected for _, expected in cases]
