"""Engines for SQLite and PostgreSQL, configured for a trial database, and database errors in plain words.

SQLite (the embedded default) runs in WAL mode so readers never wait for the writer, with foreign
keys enforced and a busy timeout from the settings. Every write transaction starts with
``BEGIN IMMEDIATE``: it takes the write lock at the start, so concurrent writers queue up cleanly
instead of failing half-way when they try to upgrade a read lock (SQLite's default ``BEGIN
DEFERRED`` does that). Read-only work asks for a deferred transaction with the execution option
``READ_ONLY``. PostgreSQL goes through psycopg 3.

Problems a user can fix (a malformed URL, a server that does not answer, a locked file, a database
that was never initialised, a duplicate that slipped past a service's check in a race) become
one-line domain errors; anything else is a bug and propagates.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, exc, make_url

from cmvtrial.config import Settings
from cmvtrial.errors import (
    AlreadyExists,
    CmvtrialError,
    DatabaseLocked,
    DatabaseNotInitialised,
    DatabaseUnavailable,
    DatabaseUrlInvalid,
    OutOfRange,
)

#: Execution option: the transaction only reads (SQLite then begins DEFERRED, not IMMEDIATE).
READ_ONLY = "cmvtrial_read_only"

SUPPORTED = "sqlite:///path/to/file.db or postgresql+psycopg://user@host:5432/dbname"
_DEFAULT_BUSY_TIMEOUT_MS: int = Settings.model_fields["sqlite_busy_timeout_ms"].default
_DEFAULT_CONNECT_TIMEOUT_S = 10
#: Key in a connection's info: it holds the process's SQLite write lock.
_WRITER = "cmvtrial_sqlite_writer"

# SQLite messages that mean "this file cannot serve" rather than "the SQL is wrong".
_SQLITE_UNAVAILABLE = (
    "unable to open database file",
    "disk i/o error",
    "attempt to write a readonly database",
    "file is not a database",
    "database disk image is malformed",
)


def parse_url(url: str | URL) -> URL:
    """Parse a database URL, or say what a valid one looks like."""
    if isinstance(url, URL):
        return url
    try:
        parsed = make_url(url.strip())
    except (exc.ArgumentError, ValueError) as error:
        raise DatabaseUrlInvalid(
            f"'{url}' is not a database URL; expected {SUPPORTED}", database=str(url)
        ) from error
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseUrlInvalid(
            f"cmvtrial runs on SQLite or PostgreSQL, not '{backend}'; expected {SUPPORTED}",
            database=safe_url(parsed),
        )
    try:
        parsed.get_dialect().import_dbapi()
    except (exc.NoSuchModuleError, ImportError) as error:
        raise DatabaseUrlInvalid(
            f"cannot use '{safe_url(parsed)}': no driver '{parsed.get_driver_name()}' "
            f"({_first_line(error)}); expected {SUPPORTED}",
            database=safe_url(parsed),
        ) from error
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL for messages and logs, with any password hidden."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except (exc.ArgumentError, ValueError):
            return url
    return url.render_as_string(hide_password=True)


def is_sqlite_file(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")


def make_engine(url: str | URL, settings: Settings | None = None) -> Engine:
    """An engine for the trial database at ``url`` (nothing connects until first use)."""
    parsed = parse_url(url)
    busy_timeout_ms = settings.sqlite_busy_timeout_ms if settings is not None else _DEFAULT_BUSY_TIMEOUT_MS
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(
                parsed,
                connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
            )
            _configure_sqlite(engine, busy_timeout_ms, parsed.database if is_sqlite_file(parsed) else None)
        else:
            connect_args: dict[str, Any] = {}
            if "connect_timeout" not in parsed.query:
                connect_args["connect_timeout"] = _DEFAULT_CONNECT_TIMEOUT_S
            engine = create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as error:
        raise DatabaseUrlInvalid(
            f"cannot use '{safe_url(parsed)}': {_first_line(error)}; expected {SUPPORTED}",
            database=safe_url(parsed),
        ) from error
    return engine


def _configure_sqlite(engine: Engine, busy_timeout_ms: int, database_file: str | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (the pysqlite driver otherwise
        # begins lazily and DEFERRED); pragmas below must run outside a transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")
            # Said, not assumed from the build: each commit syncs the WAL to disk, so a write the
            # server acknowledged survives a power cut (NORMAL would be faster and could lose it).
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    # Writers queue before BEGIN IMMEDIATE: SQLite's busy handler makes a waiting writer sleep with
    # growing back-off (up to 100 ms a try), so a server's concurrent requests would mostly sleep.
    # In this process they queue on a lock and wait only for the writer ahead of them; across
    # processes (a server with several workers, a CLI command beside it) on an advisory lock of a
    # file beside the database (benchmarks/bench_api_load.py, docs/benchmarks.md).
    queue = WriterQueue(busy_timeout_ms / 1000, f"{database_file}-writer.lock" if database_file else None)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        if not read_only:
            queue.acquire()
            connection.info[_WRITER] = True
        try:
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
        except BaseException:
            _release(connection)
            raise

    def _release(connection: Any) -> None:
        if connection.info.pop(_WRITER, False):
            queue.release()

    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)


class WriterQueue:
    """The turn to write: a lock for the threads of this process, then (for a database file) an
    exclusive ``flock`` on ``lock_path`` for the processes. Gives up with DatabaseLocked after
    ``timeout`` seconds, as SQLite's own busy timeout would."""

    #: Longest sleep between two tries for the file lock: a waiting process takes its turn within
    #: about this long after the holder's commit.
    POLL_CAP_S = 0.0005

    def __init__(self, timeout: float, lock_path: str | None) -> None:
        self.timeout = timeout
        self.lock_path = lock_path
        self._threads = threading.Lock()
        self._file: int | None = None

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        if not self._threads.acquire(timeout=self.timeout):
            raise DatabaseLocked("another writer of this process held the database past the busy timeout; try again")
        try:
            self._lock_file(deadline)
        except BaseException:
            self._threads.release()
            raise

    def release(self) -> None:
        try:
            if self._file is not None:
                fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _lock_file(self, deadline: float) -> None:
        if self.lock_path is None:
            return
        if self._file is None:
            try:
                self._file = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                self.lock_path = None  # a read-only folder: SQLite's busy handler still serialises writers
                return
        pause = 0.00005
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DatabaseLocked("another process held the database past the busy timeout; try again") from None
                time.sleep(pause)
                pause = min(pause * 2, self.POLL_CAP_S)


def translate(error: exc.DBAPIError, url: str | URL) -> CmvtrialError | None:
    """The domain error a driver error means for the user, or None when it is a bug."""
    original = error.orig
    text = _first_line(original)
    lowered = text.lower()
    sqlstate = getattr(original, "sqlstate", None)
    where = safe_url(url)
    if "database is locked" in lowered or "database table is locked" in lowered or sqlstate == "55P03":
        return DatabaseLocked(
            f"{where} is locked by another writer and stayed locked past the busy timeout; try again",
            database=where,
        )
    if sqlstate == "23505" or lowered.startswith("unique constraint failed"):
        # Services check for duplicates first; this catches the race two writers can still run.
        return AlreadyExists(f"that record already exists ({text})", database=where)
    if sqlstate == "22003":
        # A number beyond the column's range (e.g. an id of 2**31 in a URL): it cannot exist, so it
        # is bad input, not a bug (found by the API fuzzer, tests/reliability/corpus/).
        return OutOfRange(f"a number is out of the range the database stores ({text})", database=where)
    if lowered.startswith("no such table") or sqlstate == "42P01":
        return DatabaseNotInitialised(
            f"{where} has no trial tables ({text}); run `cmvtrial init --protocol ID --db {where}`",
            database=where,
        )
    if any(marker in lowered for marker in _SQLITE_UNAVAILABLE):
        return DatabaseUnavailable(f"cannot use {where}: {text}", database=where)
    if isinstance(error, exc.OperationalError) and _is_connection_problem(sqlstate):
        return DatabaseUnavailable(f"cannot connect to {where}: {text}", database=where)
    return None


def _is_connection_problem(sqlstate: str | None) -> bool:
    # No SQLSTATE: the server never answered. 08: connection exception; 28: bad credentials;
    # 3D000: no such database; 57P0x: server shutting down or not accepting connections.
    return sqlstate is None or sqlstate.startswith(("08", "28", "57P")) or sqlstate == "3D000"


def translate_overflow(error: OverflowError) -> CmvtrialError | None:
    """SQLite's driver refuses an integer beyond 64 bits before the database sees it; like
    PostgreSQL's 22003 above, that is bad input (an impossible id), not a bug."""
    if "too large to convert to sqlite" in str(error).lower():
        return OutOfRange("a number is out of the range the database stores (more than 64 bits)")
    return None


@contextmanager
def database_errors(url: str | URL) -> Iterator[None]:
    """Re-raise driver errors that the user can act on as domain errors (see ``translate``)."""
    try:
        yield
    except exc.DBAPIError as error:
        translated = translate(error, url)
        if translated is None:
            raise
        raise translated from error


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip() if error is not None else ""
    return text.splitlines()[0] if text else type(error).__name__
