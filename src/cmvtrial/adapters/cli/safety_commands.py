"""`cmvtrial ctcae …`: grade a lab value by CTCAE v5.0 and list the shipped terms.

Thin by design: parse the options, call ``cmvtrial.core.ctcae``, print. Heavy imports (pydantic,
pint, the table) happen inside the commands so that ``cmvtrial --help`` stays fast.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cmvtrial.adapters.cli.output import handles_errors


def register(app: typer.Typer) -> None:
    ctcae_app = typer.Typer(
        help="CTCAE v5.0: grade a lab value, list the terms with their MedDRA codes.",
        no_args_is_help=True,
    )
    ctcae_app.command("grade")(grade_command)
    ctcae_app.command("terms")(terms_command)
    app.add_typer(ctcae_app, name="ctcae")


@handles_errors
def grade_command(
    term: Annotated[str, typer.Option("--term", help="CTCAE term or synonym, e.g. 'Neutrophil count decreased'.")],
    value: Annotated[float, typer.Option("--value", help="The lab value.")],
    unit: Annotated[str, typer.Option("--unit", help="Its unit: UCUM code (10*9/L, /uL, g/dL, g/L, umol/L, "
                                                      "mg/dL, U/L, Cel) or a common spelling (10^9/L, cells/uL, °C).")],
    uln: Annotated[float | None, typer.Option("--uln", help="Upper limit of normal, in the value's unit.")] = None,
    lln: Annotated[float | None, typer.Option("--lln", help="Lower limit of normal, in the value's unit.")] = None,
    baseline: Annotated[float | None, typer.Option("--baseline", help="The subject's baseline value, in the value's unit.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"term", "grade", "criterion"} as JSON.')] = False,
) -> None:
    """Grade one lab value by CTCAE v5.0 (grade 0 when no criterion is met); bad input exits 2."""
    from cmvtrial.core import ctcae

    result = ctcae.grade(term, value, unit, lln=lln, uln=uln, baseline=baseline)
    if as_json:
        typer.echo(json.dumps(result.summary(), ensure_ascii=False))
        return
    typer.echo(f"{result.term} (MedDRA {result.meddra_code}): grade {result.grade}")
    typer.echo(f"  criterion: {result.criterion}")
    for reason in result.reasons:
        typer.echo(f"  - {reason}")


@handles_errors
def terms_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the terms as a JSON list.")] = False,
) -> None:
    """List the shipped CTCAE v5.0 terms with their MedDRA codes and how each is graded."""
    from cmvtrial.core import ctcae

    table = ctcae.shipped_table()
    rows = [
        {
            "term": t.term,
            "meddra_code": t.meddra_code,
            "graded_from": "lab value" if t.lab else "investigator",
            "units": [t.lab.unit, *t.lab.also_accepts] if t.lab else [],
            "synonyms": list(t.synonyms),
        }
        for t in table.terms
    ]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    typer.echo(f"CTCAE v{table.version} terms shipped with cmvtrial (any other term: free text)")
    width = max(len(r["term"]) for r in rows)
    for r in rows:
        how = f"lab value ({' or '.join(r['units'])})" if r["units"] else "investigator"
        typer.echo(f"  {r['term']:<{width}}  {r['meddra_code']}  {how}")
