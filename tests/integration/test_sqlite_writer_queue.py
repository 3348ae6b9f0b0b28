"""SQLite writers of one process queue on a lock before BEGIN IMMEDIATE (store/engine.py), so a
server's concurrent requests wait for the writer ahead of them rather than sleeping in SQLite's
busy handler. The lock must be released however a transaction ends, and never taken by readers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from cmvtrial.errors import DatabaseLocked
from cmvtrial.store.engine import READ_ONLY, make_engine


@pytest.fixture
def engine(tmp_path: Path):
    made = make_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    with made.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE counter (n INTEGER)")
        connection.exec_driver_sql("INSERT INTO counter VALUES (0)")
    yield made
    made.dispose()


def test_concurrent_writers_of_one_process_all_commit_in_turn(engine):
    def writer() -> None:
        for _ in range(50):
            with engine.begin() as connection:
                value = connection.execute(text("SELECT n FROM counter")).scalar_one()
                connection.execute(text("UPDATE counter SET n = :n"), {"n": value + 1})

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT n FROM counter")).scalar_one() == 400  # no lost update


def test_the_lock_is_released_after_a_rollback_and_an_error(engine):
    with pytest.raises(ZeroDivisionError):
        with engine.begin() as connection:
            connection.execute(text("UPDATE counter SET n = 5"))
            raise ZeroDivisionError
    with engine.begin() as connection:  # would wait out the busy timeout if the lock were still held
        connection.execute(text("UPDATE counter SET n = 6"))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT n FROM counter")).scalar_one() == 6


def test_a_reader_does_not_wait_for_an_open_write(engine):
    release = threading.Event()
    started = threading.Event()

    def slow_writer() -> None:
        with engine.begin() as connection:
            connection.execute(text("UPDATE counter SET n = 1"))
            started.set()
            release.wait(5)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    started.wait(5)
    began = time.monotonic()
    with engine.connect().execution_options(**{READ_ONLY: True}) as connection, connection.begin():
        assert connection.execute(text("SELECT n FROM counter")).scalar_one() == 0  # WAL: the committed value
    assert time.monotonic() - began < 1
    release.set()
    thread.join()


def test_a_writer_waiting_past_the_busy_timeout_is_refused_with_a_domain_error(tmp_path):
    from cmvtrial.config import load_settings

    engine = make_engine(f"sqlite:///{tmp_path / 'slow.db'}", load_settings(sqlite_busy_timeout_ms=200))
    hold, holding = threading.Event(), threading.Event()

    def holder() -> None:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            holding.set()
            hold.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    with pytest.raises(DatabaseLocked):
        with engine.begin():
            pass
    hold.set()
    thread.join()
    with engine.begin() as connection:  # and the refused writer left the lock free
        connection.exec_driver_sql("INSERT INTO t VALUES (1)")
    engine.dispose()


def test_writers_of_separate_processes_take_turns_on_the_file_lock(tmp_path):
    """Two engines on one file stand for two processes (each holds its own lock-file descriptor,
    and flock locks belong to the descriptor): their writers interleave without a lost update and
    without ever meeting SQLite's busy handler."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = make_engine(url), make_engine(url)
    with first.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE counter (n INTEGER)")
        connection.exec_driver_sql("INSERT INTO counter VALUES (0)")

    def writer(engine) -> None:
        for _ in range(40):
            with engine.begin() as connection:
                value = connection.execute(text("SELECT n FROM counter")).scalar_one()
                connection.execute(text("UPDATE counter SET n = :n"), {"n": value + 1})

    threads = [threading.Thread(target=writer, args=(engine,)) for engine in (first, second, first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with first.connect() as connection:
        assert connection.execute(text("SELECT n FROM counter")).scalar_one() == 160
    assert (tmp_path / "shared.db-writer.lock").exists()
    first.dispose()
    second.dispose()


def test_a_process_waiting_for_the_file_lock_past_the_busy_timeout_is_refused(tmp_path):
    from cmvtrial.config import load_settings

    url = f"sqlite:///{tmp_path / 'held.db'}"
    holder_engine = make_engine(url)
    waiter_engine = make_engine(url, load_settings(sqlite_busy_timeout_ms=200))
    with holder_engine.begin() as holding:
        holding.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        began = time.monotonic()
        with pytest.raises(DatabaseLocked, match="another process held the database"):
            with waiter_engine.begin():
                pass
        assert 0.15 < time.monotonic() - began < 2
    with waiter_engine.begin() as connection:  # the refused writer holds nothing: it can write now
        connection.exec_driver_sql("INSERT INTO t VALUES (1)")
    holder_engine.dispose()
    waiter_engine.dispose()
