"""`cmvtrial backup` and `cmvtrial restore`: a consistent online copy of the trial database, and
putting one back into an empty database (services/backup.py says why and how).

Thin adapter: read the options, open the database, call one service, print what was proved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cmvtrial.adapters.cli.context import AsOption, ReasonOption
from cmvtrial.adapters.cli.output import DbOption, handles_errors


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)


@handles_errors
def backup(
    out: Annotated[
        Path,
        typer.Option("--out", help="The backup file to write (a new file; never overwritten).", show_default=False),
    ],
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
) -> None:
    """Back up the trial database while it is in use: SQLite's backup API or pg_dump, with a manifest
    of row counts, the audit trail's last hash and the copy's SHA-256 (an admin's action, audited)."""
    from datetime import UTC, datetime

    from cmvtrial.adapters.cli.context import command_context
    from cmvtrial.services.backup import take_backup

    with command_context(db, as_user) as cli:
        result = take_backup(cli.database, out, actor=cli.actor, settings=cli.settings,
                             clock=lambda: datetime.now(UTC), reason=reason)
    manifest = result.manifest
    typer.echo(f"Backup of {manifest.source} written to {result.path}")
    typer.echo(f"  {manifest.rows} rows in {len(manifest.tables)} tables; {manifest.audit_events} audit events, "
               f"last hash {manifest.audit_last_hash or '-'}"
               f"{'' if manifest.audit_verified else ' (WARNING: the audit chain did not verify in the copy)'}")
    typer.echo(f"  SHA-256 of the database copy: {manifest.payload_sha256}")
    typer.echo(f"  SHA-256 of the file:          {result.file_sha256}")
    typer.echo("  The randomization seed inside is sealed: keep CMVTRIAL_SECRET_KEY, apart from this file.")


@handles_errors
def restore(
    file: Annotated[Path, typer.Argument(help="A file written by `cmvtrial backup`.", show_default=False)],
    db: DbOption = None,
) -> None:
    """Restore a backup into an EMPTY database (refused otherwise), after checking its SHA-256; then
    prove it: every table's row count and the audit trail's last hash match the backup, and the
    audit chain verifies."""
    from cmvtrial.adapters.cli.context import read_settings
    from cmvtrial.services.backup import restore_backup

    settings = read_settings(db)
    result = restore_backup(file, settings.database_url, settings)
    manifest = result.manifest
    typer.echo(f"Restored {file} (taken {manifest.created_at.isoformat()}) into {result.target}")
    typer.echo(f"  checksum ok; {manifest.rows} rows in {len(manifest.tables)} tables match the backup")
    typer.echo(f"  audit trail verified: {result.audit.count} events, last hash {result.audit.last_hash or '-'}")
