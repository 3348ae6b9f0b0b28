"""Small expressions over named items: eligibility criteria, edit checks, dose holds.

Why a sandboxed evaluator (``simpleeval``) and never ``eval``: the expressions come from protocol
files, which are data; they must not be able to reach Python's objects, the file system or the
network (DESIGN.md §2 "Expressions").

Why three-valued (Kleene) logic: a criterion whose inputs are missing is *unknown*, never silently
"met" or "not met" (DESIGN.md §2). A name that is absent from the values, or present with ``None``,
is unknown. Unknown spreads through arithmetic, comparisons and function calls, but ``and`` / ``or``
follow Kleene's strong logic: ``False and <unknown>`` is ``False`` and ``True or <unknown>`` is
``True``, because the missing value could not change the answer; everything else with an unknown
operand is unknown.

What an expression may contain (checked when it is compiled, so a bad protocol fails at load):
numbers, strings, ``True``/``False``, tuples and lists of those, names (``cmv_dna``, or
``corticosteroid.drug`` for an item inside a group), comparisons (chained too: ``18 <= age <= 70``),
``in`` / ``not in``, ``and`` / ``or`` / ``not``, ``+ - * / // % **``, ``x if c else y`` and the
functions in :data:`FUNCTIONS`. Nothing else: no attributes of values, no subscripts, no
comprehensions, no lambdas, no f-strings.

Compile once (:func:`compile_expression` is cached) and evaluate many times; each result says which
values it used and which names it was missing, so a verdict can show its reasons.
"""

from __future__ import annotations

import ast
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import simpleeval

from cmvtrial.errors import InvalidInput


class _Unknown:
    """The value of anything that depends on a missing input (one instance: :data:`UNKNOWN`)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:  # a bug if reached: unknown must be handled before truth-testing
        raise TypeError("the truth of UNKNOWN is undefined; use Kleene logic")


UNKNOWN = _Unknown()


def _any_of(values: Iterable[object], choices: Iterable[object]) -> bool:
    """Whether any of the selected values (a multi-select item) is among ``choices``."""
    chosen = set(choices)
    return any(value in chosen for value in values)


def _count_of(values: Iterable[object], choices: Iterable[object]) -> int:
    """How many of the selected values are among ``choices``."""
    chosen = set(choices)
    return sum(1 for value in values if value in chosen)


#: The whitelisted functions. Each receives known values only (unknown arguments make the call unknown).
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    "any_of": _any_of,
    "count_of": _count_of,
}

_OPERATORS = {
    ast.Add: simpleeval.safe_add,
    ast.Sub: simpleeval.op.sub,
    ast.Mult: simpleeval.safe_mult,
    ast.Div: simpleeval.op.truediv,
    ast.FloorDiv: simpleeval.op.floordiv,
    ast.Pow: simpleeval.safe_power,
    ast.Mod: simpleeval.op.mod,
    ast.Eq: simpleeval.op.eq,
    ast.NotEq: simpleeval.op.ne,
    ast.Gt: simpleeval.op.gt,
    ast.Lt: simpleeval.op.lt,
    ast.GtE: simpleeval.op.ge,
    ast.LtE: simpleeval.op.le,
    ast.Not: simpleeval.op.not_,
    ast.USub: simpleeval.op.neg,
    ast.UAdd: simpleeval.op.pos,
    ast.In: lambda x, y: x in y,
    ast.NotIn: lambda x, y: x not in y,
}

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Attribute, ast.Tuple, ast.List,
    ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.BinOp, ast.Compare, ast.IfExp, ast.Call,
    *_OPERATORS,
)

_HINTS = {
    ast.BitXor: "'^' is not a power; write 10**3 or 1000",
    ast.BitAnd: "use 'and'",
    ast.BitOr: "use 'or'",
    ast.Is: "use '==' (a missing value is unknown, not None)",
    ast.IsNot: "use '!=' (a missing value is unknown, not None)",
}


@dataclass(frozen=True)
class ExpressionResult:
    """The outcome of one evaluation.

    ``value`` is ``None`` when the answer is unknown. ``used`` holds the names read that had a
    value, with that value. ``missing`` holds the names whose absence left the answer unknown
    (empty whenever ``value`` is known: a missing input that could not change the answer is not
    reported as missing).
    """

    value: Any
    used: dict[str, object] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()

    @property
    def known(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class CompiledExpression:
    """A checked, parsed expression; evaluate it with :meth:`evaluate` as often as needed."""

    text: str
    names: frozenset[str]
    _tree: ast.Expression = field(repr=False, compare=False)

    def name_literals(self) -> tuple[tuple[str, str], ...]:
        """(name, text literal) pairs the expression compares: ``diagnosis in ('SLE', 'RA')``
        gives ``('diagnosis', 'SLE'), ('diagnosis', 'RA')``. A protocol check uses them to catch a
        code that is not in the item's codelist (a typo there would silently never match)."""
        pairs: list[tuple[str, str]] = []
        for node in ast.walk(self._tree):
            operand_pairs: list[tuple[ast.AST, ast.AST]] = []
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                operand_pairs = [
                    (left, right)
                    for operation, left, right in zip(node.ops, operands, operands[1:], strict=False)
                    if isinstance(operation, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                ]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("any_of", "count_of"):
                operand_pairs = [tuple(node.args)] if len(node.args) == 2 else []  # type: ignore[list-item]
            for left, right in operand_pairs:
                for name_node, other in ((left, right), (right, left)):
                    if isinstance(name_node, (ast.Name, ast.Attribute)):
                        pairs.extend((_dotted_name(name_node), text) for text in _text_constants(other))
        return tuple(pairs)

    def evaluate(self, values: Mapping[str, object]) -> ExpressionResult:
        """Evaluate over ``values`` (name -> value; a group's items as a nested mapping or as
        ``"group.item"`` keys). InvalidInput when the values do not fit the expression (e.g. a
        text compared with a number)."""
        evaluator = _evaluator_for(values)
        evaluator.expr = self.text
        try:
            outcome = evaluator._eval(self._tree.body)
        except (TypeError, ValueError, ArithmeticError, simpleeval.InvalidExpression) as error:
            raise InvalidInput(
                f"expression '{self.text}' cannot be evaluated on these values: {error}",
                field="expression",
                value=self.text,
            ) from None
        finally:
            evaluator.busy = False
        if outcome is UNKNOWN:
            return ExpressionResult(None, evaluator.used, frozenset(evaluator.missing))
        return ExpressionResult(outcome, evaluator.used, frozenset())


_EVALUATORS = threading.local()


def _evaluator_for(values: Mapping[str, object]) -> _KleeneEvaluator:
    """This thread's evaluator, set to ``values``: building one costs more than most evaluations
    (simpleeval sets up its tables and checks its functions each time), and a form's edit checks
    run on every entry. A nested evaluation gets an evaluator of its own."""
    kept: _KleeneEvaluator | None = getattr(_EVALUATORS, "evaluator", None)
    if kept is not None and not kept.busy:
        kept.reset(values)
        evaluator = kept
    else:
        evaluator = _KleeneEvaluator(values)
        if kept is None:
            _EVALUATORS.evaluator = evaluator
    evaluator.busy = True
    return evaluator


class _KleeneEvaluator(simpleeval.EvalWithCompoundTypes):
    """simpleeval with unknowns: names resolve from the values, missing ones to UNKNOWN."""

    def __init__(self, values: Mapping[str, object]) -> None:
        super().__init__(operators=_OPERATORS, functions=dict(FUNCTIONS), names={})
        self.nodes[ast.Attribute] = self._eval_attribute_name
        self.busy = False
        self.reset(values)

    def reset(self, values: Mapping[str, object]) -> None:
        self._max_count = 0  # simpleeval's comprehension budget, per evaluation as its eval() does
        self.values = values
        self.used: dict[str, object] = {}
        self.missing: set[str] = set()

    # names ---------------------------------------------------------------------------------
    def _lookup(self, name: str) -> object:
        if name in self.values:
            value = self.values[name]
        else:
            value = None
            head, _, rest = name.partition(".")
            container: object = self.values.get(head)
            for part in rest.split(".") if rest else []:
                container = container.get(part) if isinstance(container, Mapping) else None
            value = container if rest else None
        if value is None:
            self.missing.add(name)
            return UNKNOWN
        self.used[name] = value
        return value

    def _eval_name(self, node: ast.Name) -> object:
        return self._lookup(node.id)

    def _eval_attribute_name(self, node: ast.Attribute) -> object:
        return self._lookup(_dotted_name(node))

    # operators -----------------------------------------------------------------------------
    def _eval_unaryop(self, node: ast.UnaryOp) -> object:
        operand = self._eval(node.operand)
        return UNKNOWN if operand is UNKNOWN else self.operators[type(node.op)](operand)

    def _eval_binop(self, node: ast.BinOp) -> object:
        left, right = self._eval(node.left), self._eval(node.right)
        if left is UNKNOWN or right is UNKNOWN:
            return UNKNOWN
        return self.operators[type(node.op)](left, right)

    def _eval_boolop(self, node: ast.BoolOp) -> object:
        # Kleene: a decisive known operand (False for and, True for or) settles it; otherwise any
        # unknown operand makes the whole unknown. Left to right with short-circuit, like Python.
        deciding = isinstance(node.op, ast.Or)
        saw_unknown = False
        result: object = not deciding
        for operand in node.values:
            result = self._eval(operand)
            if result is UNKNOWN:
                saw_unknown = True
            elif bool(result) is deciding:
                return result
        return UNKNOWN if saw_unknown else result

    def _eval_compare(self, node: ast.Compare) -> object:
        # A chain a < b < c is (a < b) and (b < c), with the same Kleene rule as 'and'.
        saw_unknown = False
        right = self._eval(node.left)
        for operation, comparator in zip(node.ops, node.comparators, strict=True):
            left, right = right, self._eval(comparator)
            verdict = self._compare(operation, left, right)
            if verdict is UNKNOWN:
                saw_unknown = True
            elif not verdict:
                return False
        return UNKNOWN if saw_unknown else True

    def _compare(self, operation: ast.cmpop, left: object, right: object) -> object:
        if left is UNKNOWN or right is UNKNOWN:
            return UNKNOWN
        if isinstance(operation, (ast.In, ast.NotIn)) and _contains_unknown(right):
            known = [item for item in right if item is not UNKNOWN]  # type: ignore[attr-defined]
            if left in known:
                return isinstance(operation, ast.In)
            return UNKNOWN
        return self.operators[type(operation)](left, right)

    def _eval_ifexp(self, node: ast.IfExp) -> object:
        test = self._eval(node.test)
        if test is UNKNOWN:
            return UNKNOWN
        return self._eval(node.body) if test else self._eval(node.orelse)

    def _eval_call(self, node: ast.Call) -> object:
        function = self.functions[node.func.id]  # type: ignore[attr-defined]  # checked at compile
        arguments = [self._eval(argument) for argument in node.args]
        if any(argument is UNKNOWN or _contains_unknown(argument) for argument in arguments):
            return UNKNOWN
        return function(*arguments)


def _contains_unknown(value: object) -> bool:
    return isinstance(value, (list, tuple)) and any(item is UNKNOWN for item in value)


def _text_constants(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def _dotted_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted_name(node.value)}.{node.attr}"
    raise InvalidInput("only names can have dotted parts (group.item)", field="expression")


def _check(tree: ast.Expression, text: str) -> frozenset[str]:
    """Reject anything outside the allowed subset; return the names the expression reads."""
    names: set[str] = set()

    def refuse(message: str) -> InvalidInput:
        return InvalidInput(f"expression '{text}': {message}", field="expression", value=text)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise refuse(f"unknown function '{called}'; allowed: {', '.join(sorted(FUNCTIONS))}")
            if node.keywords:
                raise refuse("functions take positional arguments only")
            for argument in node.args:
                visit(argument)
            return
        if isinstance(node, ast.Attribute):
            try:
                names.add(_dotted_name(node))
            except InvalidInput:
                raise refuse("only names can have dotted parts (group.item)") from None
            return
        if isinstance(node, ast.Name):
            if node.id in FUNCTIONS:
                raise refuse(f"'{node.id}' is a function; call it with arguments")
            names.add(node.id)
            return
        if isinstance(node, ast.Constant) and not isinstance(node.value, (bool, int, float, str)):
            raise refuse(f"constant {node.value!r} is not allowed")
        if not isinstance(node, _ALLOWED_NODES):
            hint = _HINTS.get(type(node))
            found = type(node).__name__
            raise refuse(f"{found} is not allowed" + (f" ({hint})" if hint else ""))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return frozenset(names)


@functools.lru_cache(maxsize=1024)
def compile_expression(text: str) -> CompiledExpression:
    """Parse and check an expression once; InvalidInput names the problem and where it is."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("an expression is required", field="expression", value=text)
    source = text.strip()
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        where = f" at column {error.offset}" if error.offset else ""
        raise InvalidInput(
            f"expression '{source}' is not valid: {error.msg}{where}",
            field="expression",
            value=text,
        ) from None
    names = _check(tree, source)
    return CompiledExpression(text=source, names=names, _tree=tree)
