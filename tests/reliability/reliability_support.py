"""Helpers of the reliability tests: fresh restore targets, row counts, a CLI runner, free ports."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, func, make_url, select, text
from typer.testing import CliRunner, Result

from cmvtrial.adapters.cli.main import app
from cmvtrial.store.tables import AuditEvent, Base

PG_URL = os.environ.get("CMVTRIAL_TEST_PG_URL")
CLEAN_ENV = {"CMVTRIAL_ADMIN_PASSWORD": None, "CMVTRIAL_ADMIN_USERNAME": None, "CMVTRIAL_DATABASE_URL": None,
             "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def cli(*args: str, **env: str | None) -> Result:
    return CliRunner().invoke(app, list(args), env={**CLEAN_ENV, **env}, catch_exceptions=False)


def row_counts(url: str) -> dict[str, int]:
    """Rows per trial table (missing tables count as absent), read straight from the database."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {table.name: int(connection.execute(select(func.count()).select_from(table)).scalar_one())
                    for table in Base.metadata.sorted_tables}
    finally:
        engine.dispose()


def audit_hashes(url: str) -> list[tuple[int, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(AuditEvent.sequence, AuditEvent.hash).order_by(AuditEvent.sequence))
            return [(int(sequence), str(digest)) for sequence, digest in rows]
    finally:
        engine.dispose()


@contextmanager
def empty_target(source_url: str, folder: Path) -> Iterator[str]:
    """An empty database to restore into: a new SQLite file, or a new PostgreSQL database whose
    search_path names the same schema as ``source_url`` (pg_dump keeps schema names)."""
    source = make_url(source_url)
    if source.get_backend_name() == "sqlite":
        yield f"sqlite:///{folder / ('restored-' + uuid.uuid4().hex[:8] + '.db')}"
        return
    name = "cmvtrial_r_" + uuid.uuid4().hex[:12]
    server = create_engine(source.set(query={}), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        yield source.set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        server.dispose()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def backend_params() -> list[object]:
    import pytest

    params: list[object] = [pytest.param("sqlite", id="sqlite")]
    if PG_URL:
        params.append(pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres))
    return params


@contextmanager
def fresh_database_url(backend: str, folder: Path) -> Iterator[str]:
    """An empty database for a whole module: an SQLite file, or a new PostgreSQL schema (as
    tests/conftest.py makes one per test)."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'shared.db'}"
        return
    assert PG_URL is not None
    schema = "t_" + uuid.uuid4().hex[:16]
    server = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        yield make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        server.dispose()
