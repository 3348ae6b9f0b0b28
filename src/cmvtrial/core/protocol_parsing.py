"""Reading a protocol file: YAML text in, a validated :class:`Protocol` out, or every problem located.

Why locate problems: a protocol author fixes a file, not a Python path. Each problem says
``<source>:<line>:<column> <dotted.path>: <message>``; the line comes from PyYAML's node tree
(``yaml.compose``), walked along the path pydantic or the cross-part checks report. A YAML syntax
error is one problem at its mark; otherwise structural errors (pydantic) and cross-part problems
(:mod:`cmvtrial.core.protocol_checks`) are reported together, sorted by line, so one run lists them
all. Duplicate keys in a YAML mapping are problems too (PyYAML would silently keep the last).

Pure: takes the text, never reads a file.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import yaml
from pydantic import ValidationError

from cmvtrial.core.protocol import DEFER_CROSS_CHECKS, Protocol
from cmvtrial.core.protocol_checks import Path, cross_problems
from cmvtrial.errors import ProtocolInvalid

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_MESSAGES = {
    "extra_forbidden": "unknown field '{last}'",
    "missing": "required field '{last}' is missing",
}


def _node_at(root: yaml.Node, path: Path, keep_key: bool) -> tuple[yaml.Node, list[str | int], bool]:
    """The deepest node along ``path`` and the parts that resolved (unresolvable parts are
    pydantic's union tags or a missing key; they are skipped). With ``keep_key`` a final mapping
    key points at the key itself (an unknown field), not at its value."""
    node, resolved = root, []
    complete = True
    for position, part in enumerate(path):
        last = position == len(path) - 1
        found = False
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    node = key_node if (last and keep_key) else value_node
                    resolved.append(part)
                    found = True
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            resolved.append(part)
            found = True
        complete = complete and found
    return node, resolved, complete


def _location(source: str, node: yaml.Node, parts: Iterable[str | int]) -> str:
    mark = node.start_mark
    dotted = ".".join(str(part) for part in parts) or "(top)"
    return f"{source}:{mark.line + 1}:{mark.column + 1} {dotted}"


def _duplicate_keys(node: yaml.Node, path: Path = ()) -> Iterable[tuple[yaml.Node, Path, str]]:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                yield key_node, (*path, key), f"key '{key}' appears twice in the same mapping"
            seen.add(key)
            yield from _duplicate_keys(value_node, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, child in enumerate(node.value):
            yield from _duplicate_keys(child, (*path, index))


def _pydantic_problems(error: ValidationError) -> Iterable[tuple[Path, str, bool, bool]]:
    """(path, message, point at the key itself, a missing field) for each pydantic error."""
    details = error.errors(include_url=False)
    deeper = {tuple(detail["loc"])[:-1] for detail in details if detail["loc"]}
    for detail in details:
        loc = tuple(detail["loc"])
        if detail["type"] == "too_short" and any(other[: len(loc)] == loc for other in deeper):
            continue  # a list that is "empty" only because its entries failed: they are reported
        last = loc[-1] if loc else ""
        template = _MESSAGES.get(detail["type"])
        message = template.format(last=last) if template else str(detail["msg"]).removeprefix("Value error, ")
        yield loc, message, detail["type"] == "extra_forbidden", detail["type"] == "missing"


@functools.lru_cache(maxsize=32)
def parse_protocol(text: str, source: str = "<protocol>") -> Protocol:
    """Parse and validate a protocol file's text; ProtocolInvalid lists every problem it found."""
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506  (a safe loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = f"YAML syntax error: {error.problem or error}"
        context = error.context_mark
        if error.context and context is not None and context is not mark:
            problem += f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
        raise ProtocolInvalid(
            f"{source} is not valid YAML", problems=[{"location": where, "message": problem}]
        ) from None
    except yaml.YAMLError as error:
        raise ProtocolInvalid(
            f"{source} is not valid YAML", problems=[{"location": source, "message": str(error)}]
        ) from None
    if root is None or not isinstance(data, dict):
        raise ProtocolInvalid(
            f"{source} is not a protocol",
            problems=[{"location": f"{source}:1:1", "message": "the file must be a YAML mapping of protocol fields"}],
        )

    located: list[tuple[int, int, str, str]] = []

    def locate(path: Path, message: str, keep_key: bool = False, missing: bool = False) -> None:
        node, parts, complete = _node_at(root, path, keep_key)
        if not complete and missing:
            parts.append(path[-1])
        located.append((node.start_mark.line, node.start_mark.column, _location(source, node, parts), message))

    for node, path, message in _duplicate_keys(root):
        located.append((node.start_mark.line, node.start_mark.column, _location(source, node, path), message))
    protocol: Protocol | None = None
    try:
        protocol = Protocol.model_validate(data, context={DEFER_CROSS_CHECKS: True})
    except ValidationError as error:
        for path, message, keep_key, missing in _pydantic_problems(error):
            locate(path, message, keep_key, missing)
    for problem in cross_problems(data):
        locate(problem.path, problem.message)

    if located or protocol is None:
        located.sort(key=lambda entry: (entry[0], entry[1]))
        unique = list(dict.fromkeys((where, message) for _, _, where, message in located))
        count = len(unique)
        raise ProtocolInvalid(
            f"{source}: {count} problem{'s' if count != 1 else ''} in the protocol",
            problems=[{"location": where, "message": message} for where, message in unique],
        )
    return protocol
