"""Consistent copies of a live trial database, and putting one back: the engine-specific half of backup.

Why at the storage layer: a consistent online copy is something each database does its own way,
and getting it wrong loses data silently.

- **SQLite**: the online backup API (``sqlite3.Connection.backup`` in one step) copies the database
  as of one read transaction; in WAL mode writers carry on meanwhile and are simply not in the copy.
  The copy is switched to a rollback journal so that it is one self-contained file.
- **PostgreSQL**: ``pg_dump`` of the trial's schema in custom format, run on a snapshot exported
  from a REPEATABLE READ transaction in which the row counts are taken too, so the manifest's counts
  describe exactly the rows in the dump. Restoring uses ``pg_restore --single-transaction
  --exit-on-error``: all or nothing. Credentials go to the tools through the environment
  (PGPASSWORD …), never on a command line another user could read with ``ps``.

Row counts and the last audit event of a copy come from ``table_counts`` / ``audit_tail`` so that the
backup and the restore check the same things.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import URL, Connection, Engine, func, select, text

from cmvtrial.errors import BackupFailed, DatabaseNotEmpty, DatabaseUnavailable
from cmvtrial.store.engine import database_errors, safe_url
from cmvtrial.store.tables import AuditEvent, Base

#: Tables whose rows the manifest counts: every table of the schema, and Alembic's revision.
ALEMBIC_TABLE = "alembic_version"
#: How long pg_dump / pg_restore may run before the backup is called failed (seconds).
TOOL_TIMEOUT_S = 3600


@dataclass(frozen=True, slots=True)
class AuditTail:
    """How many audit events a copy holds and the hash of the last one."""

    count: int
    last_sequence: int | None
    last_hash: str | None


def table_names() -> list[str]:
    return [table.name for table in Base.metadata.sorted_tables] + [ALEMBIC_TABLE]


def table_counts(connection: Connection) -> dict[str, int]:
    """Rows per table, every table of the trial schema (names are ours, never user input)."""
    return {
        name: int(connection.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one())
        for name in table_names()
    }


def audit_tail(connection: Connection) -> AuditTail:
    count = int(connection.execute(select(func.count()).select_from(AuditEvent)).scalar_one())
    last = connection.execute(
        select(AuditEvent.sequence, AuditEvent.hash).order_by(AuditEvent.sequence.desc()).limit(1)
    ).first()
    return AuditTail(count, int(last[0]) if last else None, str(last[1]) if last else None)


# ------------------------------------------------------------------------------------------------
# SQLite


def sqlite_path(url: URL) -> Path:
    return Path(str(url.database))


def copy_sqlite(source: Path, destination: Path, *, busy_timeout_ms: int) -> None:
    """Copy a live SQLite database into ``destination`` (a new file), consistent as of one moment."""
    if not source.exists():
        raise DatabaseUnavailable(f"there is no database file at {source}", database=str(source))
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=busy_timeout_ms / 1000)
    try:
        dst = sqlite3.connect(destination)
        try:
            src.backup(dst)  # pages=-1: the whole database in one step, under one read transaction
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
            dst.commit()
        finally:
            dst.close()
    except sqlite3.Error as error:
        raise DatabaseUnavailable(f"cannot copy {source}: {error}", database=str(source)) from error
    finally:
        src.close()


def check_sqlite_file(path: Path) -> None:
    """Refuse a file SQLite itself finds damaged."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        verdict = connection.execute("PRAGMA integrity_check").fetchone()
    except sqlite3.Error as error:
        raise BackupFailed(f"the restored file is not a usable SQLite database: {error}") from error
    finally:
        connection.close()
    if not verdict or verdict[0] != "ok":
        raise BackupFailed(f"the restored SQLite database fails its integrity check: {verdict}")


def require_empty_sqlite_target(path: Path) -> None:
    """A restore target must be absent, an empty file, or a database without tables."""
    if not path.exists() or path.stat().st_size == 0:
        return
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.Error as error:
        raise DatabaseNotEmpty(f"{path} exists and is not an empty SQLite database ({error}); restore "
                               "into a new file", database=str(path)) from error
    finally:
        connection.close()
    if tables:
        raise DatabaseNotEmpty(
            f"{path} already holds {len(tables)} tables; a restore never overwrites: restore into a new file",
            database=str(path), tables=len(tables),
        )


def install_sqlite_file(restored: Path, target: Path) -> None:
    """Move a checked copy into place, never over a database that appeared meanwhile."""
    require_empty_sqlite_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(restored, target)


# ------------------------------------------------------------------------------------------------
# PostgreSQL


def libpq_environment(url: URL) -> dict[str, str]:
    """The PG* variables that make pg_dump / pg_restore connect where ``url`` points."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    pairs = {
        "PGHOST": url.host, "PGPORT": str(url.port) if url.port else None, "PGUSER": url.username,
        "PGPASSWORD": url.password if isinstance(url.password, str) else None, "PGDATABASE": url.database,
    }
    env.update({key: value for key, value in pairs.items() if value})
    query = {key: (value[0] if isinstance(value, tuple) else value) for key, value in url.query.items()}
    for name, variable in (("options", "PGOPTIONS"), ("sslmode", "PGSSLMODE"), ("connect_timeout", "PGCONNECT_TIMEOUT")):
        if query.get(name):
            env[variable] = str(query[name])
    return env


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupFailed(
            f"{name} is not installed; on Debian: apt-get install postgresql-client (its major version must "
            "be at least the server's)",
            tool=name,
        )
    return found


def _run(command: list[str], env: dict[str, str], what: str) -> str:
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
        raise BackupFailed(f"{what} did not finish within {TOOL_TIMEOUT_S} s") from error
    if done.returncode != 0:
        detail = " ".join(done.stderr.strip().splitlines()[-3:]) or f"exit status {done.returncode}"
        raise BackupFailed(f"{what} failed: {detail}")
    return done.stdout


@contextmanager
def exported_snapshot(engine: Engine) -> Iterator[tuple[str, str, Connection]]:
    """A REPEATABLE READ transaction held open, its exported snapshot id and the current schema."""
    with database_errors(engine.url), engine.connect() as connection:
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            snapshot = str(connection.execute(text("SELECT pg_export_snapshot()")).scalar_one())
            schema = str(connection.execute(text("SELECT current_schema()")).scalar_one())
            yield snapshot, schema, connection


def dump_postgres(url: URL, schema: str, snapshot: str, destination: Path) -> None:
    """pg_dump of one schema, as of ``snapshot``, in custom format (compressed, for pg_restore)."""
    command = [
        tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--schema={schema}",
        f"--snapshot={snapshot}", f"--file={destination}",
    ]
    _run(command, libpq_environment(url), f"pg_dump of {safe_url(url)}")


def current_schema(engine: Engine) -> str:
    """The schema the trial lives (or would live) in: the first of the search_path, even when it
    does not exist yet (then ``current_schema()`` is NULL)."""
    with database_errors(engine.url), engine.connect() as connection:
        found = connection.execute(text("SELECT current_schema()")).scalar_one()
        if found is not None:
            return str(found)
        path = str(connection.execute(text("SHOW search_path")).scalar_one())
    for entry in (part.strip().strip('"') for part in path.split(",")):
        if entry and entry != "$user":
            return entry
    return "public"


def schema_objects(engine: Engine, schema: str) -> tuple[bool, int]:
    """Whether ``schema`` exists, and how many tables, sequences, views and functions it holds."""
    with database_errors(engine.url), engine.connect() as connection:
        exists = connection.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": schema})
        relations = connection.execute(
            text("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE n.nspname = :s AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"), {"s": schema})
        functions = connection.execute(
            text("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :s"),
            {"s": schema})
        return bool(exists.scalar_one()), int(relations.scalar_one()) + int(functions.scalar_one())


def restore_postgres(url: URL, dump: Path, *, schema_exists: bool, schema: str) -> None:
    """pg_restore into an empty schema, in one transaction. The schema's own CREATE is left out
    when it already exists (``public`` always does)."""
    env = libpq_environment(url)
    listing = _run([tool("pg_restore"), "--list", str(dump)], env, "reading the backup's table of contents")
    kept = list(_restore_list(listing.splitlines(), schema if schema_exists else None))
    with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False, encoding="utf-8") as handle:
        handle.write("\n".join(kept) + "\n")
        list_file = handle.name
    try:
        _run(
            [tool("pg_restore"), "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
             f"--use-list={list_file}", f"--dbname={url.database}", str(dump)],
            env, f"pg_restore into {safe_url(url)}",
        )
    finally:
        os.unlink(list_file)


def _restore_list(lines: Iterable[str], existing_schema: str | None) -> Iterator[str]:
    for line in lines:
        if existing_schema and (f" SCHEMA - {existing_schema} " in line or line.rstrip().endswith(
                f" SCHEMA - {existing_schema}") or f" COMMENT - SCHEMA {existing_schema} " in line):
            continue
        yield line


def drop_restored(engine: Engine, schema: str, *, keep_schema: bool) -> None:
    """Undo a restore whose result did not match the manifest: the schema is left as it was."""
    with database_errors(engine.url), engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        if keep_schema:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
