"""Throwaway trial databases for the benchmarks: a SQLite file in a temporary folder, or a fresh
schema on a PostgreSQL server (dropped afterwards), so a run never touches anyone's data."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, make_url


@contextmanager
def sqlite_url(prefix: str = "cmvtrial-bench-") -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield f"sqlite:///{folder}/trial.db"


@contextmanager
def postgres_url(server_url: str) -> Iterator[str]:
    """A URL whose search path is a new schema on ``server_url``'s server, dropped on exit."""
    schema = "bench_" + uuid.uuid4().hex[:12]
    server = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield make_url(server_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        server.dispose()
