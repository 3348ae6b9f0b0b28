"""Entry point of `cmvtrial`: assembles the command groups. Keep imports light: `--help` must be fast."""

from __future__ import annotations

import typer

from cmvtrial import __version__

app = typer.Typer(
    name="cmvtrial",
    help="Run the low-dose IL-2 + ganciclovir CMV trial: protocols, sites, users, audit trail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cmvtrial {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """cmvtrial runs one clinical trial end to end. See README.md for a tour."""


def _register_command_groups() -> None:
    # Each module exposes register(app); modules import only typer/rich at top level.
    from cmvtrial.adapters.cli import admin_commands, protocol_commands, screening_commands
    from cmvtrial.adapters.cli import safety_commands, treatment_commands
    from cmvtrial.adapters.cli import simulation_commands
    from cmvtrial.adapters.cli import serve_commands
    from cmvtrial.adapters.cli import randomization_commands, subject_commands
    from cmvtrial.adapters.cli import adverse_event_commands
    from cmvtrial.adapters.cli import data_commands, query_commands
    from cmvtrial.adapters.cli import analysis_commands
    from cmvtrial.adapters.cli import interop_commands
    from cmvtrial.adapters.cli import backup_commands

    protocol_commands.register(app)
    admin_commands.register(app)
    screening_commands.register(app)
    subject_commands.register(app)
    randomization_commands.register(app)  # after subject_commands: `randomize` follows `consent` in --help
    safety_commands.register(app)
    adverse_event_commands.register(app)
    treatment_commands.register(app)
    data_commands.register(app)  # after treatment_commands: adds `dose record` to its `dose` group
    query_commands.register(app)
    simulation_commands.register(app)
    analysis_commands.register(app)
    interop_commands.register(app)  # after analysis_commands: adds `export sdtm|odm|fhir` to its `export` group
    serve_commands.register(app)
    backup_commands.register(app)


_register_command_groups()


def run() -> None:
    """Console-script entry point."""
    app()
