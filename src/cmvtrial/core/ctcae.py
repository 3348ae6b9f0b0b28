"""CTCAE v5.0 grading of laboratory values, driven entirely by a table of data.

Why a table: CTCAE is a published standard with its own versions (v6.0 replaced some terms in 2025),
and each threshold must be checkable against its source. So the thresholds, the CTCAE wording and
the MedDRA codes live in ``reference_data/ctcae_v5.yaml``; this module only knows the *shape* of a
criterion (``value < limit``, ``value > k x ULN``, ``... x baseline if the baseline was abnormal``)
and how CTCAE combines them: a grade is met when any of its criteria holds, and the worst grade met
applies (reference/domain.md §6).

The engine is pure: it takes the value, its unit and the subject's reference limits and returns a
``GradeResult`` that says which criterion decided and what it could not judge. Values are compared
in the unit of the table's absolute limits (pint converts 10^9/L, /uL, g/L, degF ...); criteria that
are multiples of LLN/ULN/baseline need no conversion, since those are given in the value's unit.

Missing limits follow the admiral convention the reference cites: a value is graded when the missing
limit cannot change the answer (neutrophils 0.4 x 10^9/L is grade 4 whatever the LLN), and refused
with the field named when it could. A missing baseline means "baseline normal" for the two-rule liver
terms and "no baseline criteria" for creatinine; the result says so.
"""

from __future__ import annotations

import difflib
import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cmvtrial.core import units
from cmvtrial.errors import InvalidInput, OutOfRange, UnitError

Reference = Literal["lln", "uln", "baseline"]
Operator = Literal["<", "<=", ">", ">="]
Direction = Literal["decreased", "increased"]

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_REFERENCE_LABEL = {"lln": "LLN", "uln": "ULN", "baseline": "baseline"}
_REFERENCE_OPTION = {"lln": "the lower limit of normal (lln)", "uln": "the upper limit of normal (uln)"}
GRADES = (1, 2, 3, 4, 5)


def tidy(number: float) -> float:
    """Round to 12 significant digits so that 1.5 x 0.7 and 100.4 degF -> degC land on the boundary.

    Lab values carry a handful of significant digits; binary floating point noise (1.0499999999999998)
    must not move a value that sits exactly on a CTCAE threshold into the next grade.
    """
    return float(f"{number:.12g}")


def _fmt(number: float) -> str:
    return f"{number:g}"


def _table_unit(text: str) -> str:
    try:
        return units.canonical_unit(text)
    except UnitError as error:  # pydantic reports ValueErrors with their location
        raise ValueError(error.message) from None


class Criterion(BaseModel):
    """One threshold of one grade: ``value <op> limit`` or ``value <op> times x LLN/ULN/baseline``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grade: int = Field(ge=1, le=5)
    op: Operator
    limit: float | None = None
    of: Reference | None = None
    times: float = Field(default=1.0, gt=0)
    when: Literal["baseline_normal", "baseline_abnormal"] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Criterion:
        if (self.limit is None) == (self.of is None):
            raise ValueError("a criterion has either 'limit' or 'of', not both or neither")
        if self.when is not None and self.of == "lln":
            raise ValueError("'when' applies to criteria against ULN or baseline")
        return self

    def describe(self, unit: str) -> str:
        if self.limit is not None:
            return f"{self.op} {_fmt(self.limit)} {unit}"
        label = _REFERENCE_LABEL[self.of or ""]
        return f"{self.op} {label}" if self.times == 1.0 else f"{self.op} {_fmt(self.times)} x {label}"


class LabGrading(BaseModel):
    """How a term is graded from one lab value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    direction: Direction
    unit: str
    also_accepts: tuple[str, ...] = ()
    minimum: float | None = None
    loinc: tuple[str, ...] = ()
    criteria: tuple[Criterion, ...]
    note: str | None = None

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, value: str) -> str:
        return _table_unit(value)

    @field_validator("also_accepts")
    @classmethod
    def _known_units(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_table_unit(v) for v in value)

    @model_validator(mode="after")
    def _consistent(self) -> LabGrading:
        worsening = {"decreased": ("<", "<="), "increased": (">", ">=")}[self.direction]
        for criterion in self.criteria:
            if criterion.op not in worsening:
                raise ValueError(f"a '{self.direction}' term needs criteria with {' or '.join(worsening)}")
        if self.also_accepts and self.has_absolute_limits:
            raise ValueError("'also_accepts' needs every criterion relative to LLN/ULN/baseline")
        if not self.criteria:
            raise ValueError("a lab-graded term needs at least one criterion")
        return self

    @property
    def has_absolute_limits(self) -> bool:
        return any(c.limit is not None for c in self.criteria)

    @property
    def uses(self) -> set[str]:
        used = {c.of for c in self.criteria if c.of}
        if any(c.when for c in self.criteria):
            used.add("uln")
        return used


class Term(BaseModel):
    """A CTCAE term: its MedDRA code, the wording of each grade, and (for labs) its criteria."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    term: str = Field(min_length=1)
    meddra_code: str = Field(pattern=r"^\d{8}$")
    synonyms: tuple[str, ...] = ()
    grades: dict[int, str | None]
    unconfirmed: str | None = None
    lab: LabGrading | None = None

    @model_validator(mode="after")
    def _grades_defined(self) -> Term:
        if sorted(self.grades) != list(GRADES):
            raise ValueError("grades must list 1 to 5 (null where CTCAE prints '-')")
        for criterion in self.lab.criteria if self.lab else ():
            if not self.grades.get(criterion.grade):
                raise ValueError(f"a criterion for grade {criterion.grade}, which CTCAE does not define")
        return self

    def grade_text(self, grade: int) -> str | None:
        """CTCAE wording of a grade; None where CTCAE defines no such grade for this term."""
        return self.grades.get(grade)

    @property
    def defined_grades(self) -> list[int]:
        return [g for g in GRADES if self.grades.get(g)]


@dataclass(frozen=True)
class GradeResult:
    """The outcome of grading one value: the grade, the CTCAE wording that decided it, and why."""

    term: str
    meddra_code: str
    grade: int
    criterion: str
    reasons: tuple[str, ...]
    value: float
    unit: str

    def summary(self) -> dict[str, Any]:
        """The public shape of ``cmvtrial ctcae grade --json``."""
        return {"term": self.term, "grade": self.grade, "criterion": self.criterion}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "meddra_code": self.meddra_code, "reasons": list(self.reasons),
                "value": self.value, "unit": self.unit}


class CtcaeTable(BaseModel):
    """A version of CTCAE as data; ``grade`` and ``find`` are the two things callers need."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    published: str
    source: str
    general_grades: dict[int, str]
    terms: tuple[Term, ...]

    @model_validator(mode="after")
    def _unique_names(self) -> CtcaeTable:
        seen: dict[str, str] = {}
        for term in self.terms:
            for name in (term.term, *term.synonyms):
                key = name.casefold()
                if key in seen:
                    raise ValueError(f"'{name}' names both '{seen[key]}' and '{term.term}'")
                seen[key] = term.term
        if sorted(self.general_grades) != list(GRADES):
            raise ValueError("general_grades must define grades 1 to 5")
        return self

    @functools.cached_property
    def _by_name(self) -> dict[str, Term]:
        return {name.casefold(): t for t in self.terms for name in (t.term, *t.synonyms)}

    def lookup(self, name: str) -> Term | None:
        """The term a name or synonym refers to (case-insensitive), or None for free text."""
        if not isinstance(name, str):
            return None
        return self._by_name.get(" ".join(name.split()).casefold())

    def find(self, name: str) -> Term:
        """The term, or InvalidInput naming the field and the closest known names."""
        term = self.lookup(name)
        if term is None:
            close = difflib.get_close_matches(str(name), [t.term for t in self.terms], n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise InvalidInput(
                f"unknown CTCAE v{self.version} term '{name}'{hint} (`cmvtrial ctcae terms` lists them)",
                field="term",
                value=name,
            )
        return term

    def lab_terms(self) -> list[Term]:
        return [t for t in self.terms if t.lab is not None]

    def terms_for_loinc(self, code: str) -> list[Term]:
        """The terms that grade a lab item with this LOINC code (how a lab value finds its term)."""
        return [t for t in self.lab_terms() if t.lab and code in t.lab.loinc]

    def grade(
        self,
        term: str,
        value: float,
        unit: str,
        *,
        lln: float | None = None,
        uln: float | None = None,
        baseline: float | None = None,
    ) -> GradeResult:
        """Grade one lab value; LLN, ULN and baseline are in the value's unit."""
        found = self.find(term)
        if found.lab is None:
            raise InvalidInput(
                f"'{found.term}' is graded by the investigator, not from a lab value",
                field="term",
                value=term,
            )
        return _Grader(found, found.lab).grade(value, unit, lln=lln, uln=uln, baseline=baseline)


class _Grader:
    """Grades one term; split out so each step (units, limits, criteria) reads on its own."""

    def __init__(self, term: Term, lab: LabGrading) -> None:
        self.term = term
        self.lab = lab

    def grade(
        self, value: float, unit: str, *, lln: float | None, uln: float | None, baseline: float | None
    ) -> GradeResult:
        raw = {"value": _number(value, "value"), "lln": _optional(lln, "lln"),
               "uln": _optional(uln, "uln"), "baseline": _optional(baseline, "baseline")}
        code = units.canonical_unit(unit)
        work_unit = self._working_unit(code)
        values = {k: (None if v is None else tidy(units.convert(v, code, work_unit))) for k, v in raw.items()}
        self._check_limits(values, work_unit)
        reasons: list[str] = []
        if work_unit != code:
            reasons.append(f"value {_fmt(raw['value'])} {code} = {_fmt(values['value'] or 0)} {work_unit}")
        state = self._baseline_state(values, reasons)
        grade, reason = self._decide(values, state, work_unit)
        reasons.insert(0, reason)
        if self.lab.note:
            reasons.append(self.lab.note)
        unused = [k for k in ("lln", "uln", "baseline") if raw[k] is not None and k not in self.lab.uses]
        if unused:
            reasons.append(f"{', '.join(unused)} not used: this term's criteria do not refer to it")
        text = self.term.grade_text(grade) if grade else self._grade_zero_text()
        return GradeResult(
            term=self.term.term,
            meddra_code=self.term.meddra_code,
            grade=grade,
            criterion=text or "",
            reasons=tuple(reasons),
            value=raw["value"],
            unit=code,
        )

    def _working_unit(self, code: str) -> str:
        """The unit comparisons happen in: the table's unit when it has absolute limits."""
        lab = self.lab
        if units.are_compatible(code, lab.unit):
            return lab.unit if lab.has_absolute_limits else code
        if any(units.are_compatible(code, other) for other in lab.also_accepts):
            return code
        accepted = ", ".join((lab.unit, *lab.also_accepts))
        raise UnitError(
            f"'{self.term.term}' is graded from a value in {accepted} (or a unit convertible to it); "
            f"got {code}",
            field="unit",
            value=code,
            expected=accepted,
        )

    def _check_limits(self, values: dict[str, float | None], unit: str) -> None:
        minimum = self.lab.minimum
        for name in ("value", "lln", "uln", "baseline"):
            number = values[name]
            if number is None:
                continue
            if minimum is not None and number < minimum:
                raise OutOfRange(
                    f"{name} {_fmt(number)} {unit} is impossible for '{self.term.term}': "
                    f"it cannot be below {_fmt(minimum)}",
                    field=name,
                    value=number,
                    limit=minimum,
                )
            if name in ("uln", "baseline") and name in self.lab.uses and number <= 0:
                raise OutOfRange(
                    f"{name} must be above 0 to grade by multiples of it", field=name, value=number
                )
        lln, uln = values["lln"], values["uln"]
        if lln is not None and uln is not None and lln >= uln:
            raise InvalidInput(
                f"lln ({_fmt(lln)}) must be below uln ({_fmt(uln)})", field="lln", value=lln, limit=uln
            )

    def _baseline_state(self, values: dict[str, float | None], reasons: list[str]) -> str | None:
        """'normal', 'abnormal', or None when it cannot be told (baseline given, limit missing)."""
        if "baseline" not in self.lab.uses:
            return "normal"
        baseline = values["baseline"]
        two_rule = any(c.when for c in self.lab.criteria)
        if baseline is None:
            reasons.append(
                "baseline not given: graded as if the baseline was normal (against ULN)"
                if two_rule
                else "baseline not given: the criteria relative to baseline were not applied"
            )
            return "normal"
        if not two_rule:
            return "normal"
        limit = values["uln"] if self.lab.direction == "increased" else values["lln"]
        if limit is None:
            return None
        increased = self.lab.direction == "increased"
        abnormal = baseline > limit if increased else baseline < limit
        label = "ULN" if increased else "LLN"
        reasons.append(
            f"baseline {_fmt(baseline)} is {'outside' if abnormal else 'within'} {label} {_fmt(limit)}: "
            f"graded against the {'baseline' if abnormal else label} (CTCAE v5 rule for "
            f"{'an abnormal' if abnormal else 'a normal'} baseline)"
        )
        return "abnormal" if abnormal else "normal"

    def _decide(
        self, values: dict[str, float | None], state: str | None, unit: str
    ) -> tuple[int, str]:
        value = values["value"]
        assert value is not None
        for grade in sorted({c.grade for c in self.lab.criteria}, reverse=True):
            missing: set[str] = set()
            for criterion in (c for c in self.lab.criteria if c.grade == grade):
                if criterion.when is not None:
                    if state is None:
                        missing.add("uln")
                        continue
                    if criterion.when != f"baseline_{state}":
                        continue
                if criterion.limit is not None:
                    threshold = criterion.limit
                else:
                    reference = values[criterion.of or ""]
                    if reference is None:
                        if criterion.of != "baseline":
                            missing.add(criterion.of or "")
                        continue
                    threshold = tidy(criterion.times * reference)
                if _OPERATORS[criterion.op](value, threshold):
                    return grade, self._explain(grade, criterion, value, threshold, unit, values)
            if missing:
                needed = " and ".join(_REFERENCE_OPTION[m] for m in sorted(missing))
                raise InvalidInput(
                    f"'{self.term.term}' {_fmt(value)} {unit} cannot be graded without {needed}",
                    field=sorted(missing)[0],
                    value=None,
                )
        return 0, f"{_fmt(value)} {unit} meets no criterion of grade 1 or above"

    @staticmethod
    def _explain(
        grade: int, criterion: Criterion, value: float, threshold: float, unit: str,
        values: dict[str, float | None],
    ) -> str:
        if criterion.limit is not None:
            return f"grade {grade}: {_fmt(value)} {unit} {criterion.op} {_fmt(threshold)} {unit}"
        label = _REFERENCE_LABEL[criterion.of or ""]
        if criterion.times == 1.0:
            return f"grade {grade}: {_fmt(value)} {unit} {criterion.op} {label} ({_fmt(threshold)} {unit})"
        reference = values[criterion.of or ""]
        return (
            f"grade {grade}: {_fmt(value)} {unit} {criterion.op} {_fmt(criterion.times)} x {label} "
            f"({_fmt(criterion.times)} x {_fmt(reference or 0)} = {_fmt(threshold)} {unit})"
        )

    def _grade_zero_text(self) -> str:
        return f"no CTCAE grade met (grade 1 is: {self.term.grade_text(1)})"


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{field} must be a number, got {value!r}", field=field, value=value)
    if not math.isfinite(value):
        raise InvalidInput(f"{field} must be a finite number, got {value!r}", field=field, value=value)
    return float(value)


def _optional(value: Any, field: str) -> float | None:
    return None if value is None else _number(value, field)


def table_from_mapping(data: dict[str, Any]) -> CtcaeTable:
    """Validate a table read from YAML; every problem is listed with its location."""
    try:
        return CtcaeTable.model_validate(data)
    except ValidationError as error:
        problems = [
            {"location": ".".join(str(p) for p in e["loc"]) or "table", "message": e["msg"]} for e in error.errors()
        ]
        raise InvalidInput(
            f"CTCAE table has {len(problems)} problem(s); first: {problems[0]['location']}: "
            f"{problems[0]['message']}",
            field="table",
            problems=problems,
        ) from None


@functools.lru_cache(maxsize=1)
def shipped_table() -> CtcaeTable:
    """The CTCAE v5.0 table shipped with cmvtrial, validated once (read-only package data)."""
    from cmvtrial import reference_data

    return table_from_mapping(reference_data.ctcae_v5_mapping())


def grade(
    term: str,
    value: float,
    unit: str,
    *,
    lln: float | None = None,
    uln: float | None = None,
    baseline: float | None = None,
    table: CtcaeTable | None = None,
) -> GradeResult:
    """Grade one lab value by CTCAE (the shipped v5.0 table unless another is passed).

    LLN, ULN and baseline are in the value's unit. Raises InvalidInput (field ``term``, ``value``,
    ``lln``, ``uln``, ``baseline``) or UnitError (field ``unit``) on input that cannot be graded.
    """
    return (table or shipped_table()).grade(term, value, unit, lln=lln, uln=uln, baseline=baseline)
