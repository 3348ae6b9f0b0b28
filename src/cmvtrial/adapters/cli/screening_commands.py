"""`cmvtrial eligibility check` and `cmvtrial randomization list`: the screening and allocation
rules of a protocol, run on a file or a seed without a database.

Thin by design: parse the input, call core, render. Exit codes (issue 3): eligibility 0 eligible,
1 not eligible, 3 undetermined, 2 bad input (with a message naming the field). Only typer/stdlib at
module top: pydantic, pint and the core load inside the commands so ``cmvtrial --help`` stays fast.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from cmvtrial.adapters.cli.context import read_text
from cmvtrial.adapters.cli.output import handles_errors

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.eligibility import EligibilityResult
    from cmvtrial.core.protocol import Protocol
    from cmvtrial.core.randomization import ListEntry

EXIT_ELIGIBLE, EXIT_NOT_ELIGIBLE, EXIT_UNDETERMINED = 0, 1, 3

ProtocolOption = Annotated[
    str,
    typer.Option(
        "--protocol",
        help="A shipped protocol id (see `cmvtrial protocol list`) or a protocol YAML file.",
        show_default=False,
    ),
]


def load_protocol(reference: str) -> Protocol:
    """A shipped protocol by id, or a protocol file (the same lookup as `cmvtrial protocol validate`)."""
    from cmvtrial.protocols import load_protocol as load

    protocol, _text = load(reference)
    return protocol


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]" if value else "[]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


_VERDICT_STYLE = {"met": "green", "not_met": "red", "unknown": "yellow"}


def _render_eligibility(result: EligibilityResult, protocol_id: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=False)
    table = Table(title=f"Eligibility under protocol {protocol_id}", show_lines=False)
    table.add_column("criterion", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("values used", overflow="fold", ratio=3)
    table.add_column("registry wording", overflow="fold", ratio=2)
    for verdict in result.criteria:
        shown = ", ".join(f"{k}={_format_value(v)}" for k, v in verdict.values.items())
        if verdict.missing:
            shown = (shown + "; " if shown else "") + "missing: " + ", ".join(verdict.missing)
        style = _VERDICT_STYLE[verdict.verdict]
        table.add_row(verdict.id, verdict.kind, f"[{style}]{verdict.verdict}[/]", shown, verdict.text)
    console.print(table)

    derived = Table(title="Derived values")
    for column in ("name", "value", "unit", "missing"):
        derived.add_column(column)
    for name, value in result.derived.items():
        shown = "unknown" if value.value is None else _format_value(value.value)
        derived.add_row(name, shown, result.derived_units.get(name) or "", ", ".join(sorted(value.missing)))
    console.print(derived)

    if result.eligible is True:
        console.print("[green]ELIGIBLE[/]: every inclusion criterion met, no exclusion criterion met")
    elif result.eligible is False:
        ids = ", ".join(v.id for v in result.reasons_not_eligible)
        console.print(f"[red]NOT ELIGIBLE[/]: {ids}")
    else:
        ids = ", ".join(v.id for v in result.unknown)
        console.print(f"[yellow]UNDETERMINED[/]: {ids} unknown; missing {', '.join(result.missing)}")


def _render_list(entries: list[ListEntry], protocol_id: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Randomization list, protocol {protocol_id}")
    for column in ("sequence", "stratum", "block", "block size", "arm"):
        table.add_column(column)
    for entry in entries:
        table.add_row(str(entry.sequence), entry.stratum, str(entry.block), str(entry.block_size), entry.arm)
    Console(highlight=False).print(table)


def register(app: typer.Typer) -> None:
    eligibility_app = typer.Typer(help="Judge a candidate's eligibility under a protocol.", no_args_is_help=True)
    randomization_app = typer.Typer(
        help="Randomization: lists for inspection, the scheme, balance, export and verification.", no_args_is_help=True
    )
    app.add_typer(eligibility_app, name="eligibility")
    app.add_typer(randomization_app, name="randomization")

    @eligibility_app.command("check")
    @handles_errors
    def check(
        file: Annotated[
            str, typer.Argument(help="The screening record (JSON, see docs/screening-record.md); - reads stdin.")
        ],
        protocol: ProtocolOption,
        as_json: Annotated[bool, typer.Option("--json", help="Print the verdicts as JSON.")] = False,
    ) -> None:
        """Judge every inclusion and exclusion criterion; exit 0 eligible, 1 not eligible, 3 undetermined, 2 bad input."""
        from cmvtrial.core.eligibility import evaluate_eligibility
        from cmvtrial.core.screening_record import parse_screening_record

        loaded = load_protocol(protocol)
        record = parse_screening_record(read_text(file), source=file)
        result = evaluate_eligibility(loaded, record)
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        else:
            _render_eligibility(result, loaded.id)
        if result.eligible is None:
            raise typer.Exit(EXIT_UNDETERMINED)
        raise typer.Exit(EXIT_ELIGIBLE if result.eligible else EXIT_NOT_ELIGIBLE)

    @randomization_app.command("list")
    @handles_errors
    def list_(
        protocol: ProtocolOption,
        seed: Annotated[str, typer.Option("--seed", help="The list's seed (keep it secret in production).")],
        n: Annotated[int, typer.Option("--n", help="How many positions to print.")],
        stratum: Annotated[
            str, typer.Option("--stratum", help="The stratum's name; each stratum has its own list.")
        ] = "all",
        as_json: Annotated[
            bool, typer.Option("--json", help='Print [{"sequence", "stratum", "block", "block_size", "arm"}].')
        ] = False,
    ) -> None:
        """Print the permuted-block list the seed gives (block sizes and ratio from the protocol)."""
        from cmvtrial.core.randomization import generate_block_list
        from cmvtrial.errors import InvalidInput

        loaded = load_protocol(protocol)
        settings = loaded.randomization
        if settings.method != "permuted_blocks":
            raise InvalidInput(
                f"protocol {loaded.id} randomizes by {settings.method}; there is no list to print",
                field="protocol",
                value=protocol,
            )
        entries = generate_block_list(dict(settings.ratio), list(settings.block_sizes), n, seed, stratum)
        if as_json:
            typer.echo(json.dumps([entry.to_dict() for entry in entries], indent=2, ensure_ascii=False))
        else:
            _render_list(entries, loaded.id)
