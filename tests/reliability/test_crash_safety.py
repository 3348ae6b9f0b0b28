"""Crash safety: `cmvtrial serve` killed with SIGKILL at random moments while clients write (issue 10).

Three client threads create sites and user accounts through the REST API with an admin's bearer
token. The server process is killed (SIGKILL: no shutdown, no flushing) at a random moment of each
of ``KILLS`` runs and started again. Afterwards:

- every write the server acknowledged (201) is in the database;
- nothing is half-written: each site and each account has exactly one creation event in the audit
  trail and each creation event has its row, including writes whose answer was lost in the kill;
- `cmvtrial audit verify` passes (and SQLite's own integrity check);
- no request got a 5xx, and the server log holds no token, password or key.

On SQLite and, when CMVTRIAL_TEST_PG_URL is set, PostgreSQL. Seeded, so a failure replays.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from reliability_support import cli, free_port
from sqlalchemy import make_url, select

from cmvtrial.services import api_tokens
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import AuditEvent, Site, User

KILLS = 20
SEED = 20260310
PASSWORD = "crash-test-password-1"


@dataclass
class Ledger:
    """What the clients saw: acknowledged writes, writes whose answer was lost, and wrong answers."""

    acknowledged: list[tuple[str, str]] = field(default_factory=list)
    in_doubt: list[tuple[str, str]] = field(default_factory=list)
    wrong: list[tuple[str, str, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Server:
    """`cmvtrial serve` as a child process on a free loopback port."""

    def __init__(self, url: str, log: Path, secret_key: str) -> None:
        self.url, self.log_path, self.secret_key = url, log, secret_key
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from cmvtrial.adapters.cli.main import run; run()",
                 "serve", "--db", self.url, "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin", "CMVTRIAL_SECRET_KEY": self.secret_key, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text(encoding="utf-8", errors="replace")
            try:
                if httpx.get(f"{self.base}/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("the server did not come up within 30 s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def client(base: str, token: str, prefix: str, stop: threading.Event, ledger: Ledger) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    index = 0
    with httpx.Client(timeout=10, headers=headers) as http:
        while not stop.is_set():
            index += 1
            kind, key = ("user", f"{prefix.lower()}{index:05d}") if index % 5 == 0 else ("site", f"{prefix}{index:05d}")
            body = ({"code": key, "name": f"Hospital {key}", "reason": "crash test"} if kind == "site" else
                    {"username": key, "password": PASSWORD, "role": "monitor", "reason": "crash test"})
            try:
                response = http.post(f"{base}/api/v1/{kind}s", json=body)
            except httpx.ConnectError:
                time.sleep(0.02)  # the server is down: the request never left, nothing can be written
                continue
            except httpx.TransportError:
                with ledger.lock:  # sent, but the answer was lost in the kill: written or not, never half
                    ledger.in_doubt.append((kind, key))
                continue
            with ledger.lock:
                if response.status_code == 201:
                    ledger.acknowledged.append((kind, key))
                else:
                    ledger.wrong.append((kind, key, response.status_code, response.text[:300]))


def test_acknowledged_writes_survive_sigkill_and_nothing_is_half_written(trial_database, admin, database_url, tmp_path,
                                                                        secret_key):
    issued = api_tokens.create_token(UnitOfWork(trial_database.session_factory), admin, "crash test",
                                     lifetime=timedelta(days=1))
    trial_database.dispose()
    server, ledger, rng = Server(database_url, tmp_path / "server.log", secret_key), Ledger(), random.Random(SEED)
    stop = threading.Event()
    clients = [threading.Thread(target=client, args=(server.base, issued.token, prefix, stop, ledger))
               for prefix in ("CA", "CB", "CC")]
    try:
        server.start()
        for thread in clients:
            thread.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, 0.6))
            server.kill()
            server.start()
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
        if server.process is not None and server.process.poll() is None:
            server.kill()

    print(f"acknowledged {len(ledger.acknowledged)}, in doubt {len(ledger.in_doubt)}")
    assert not ledger.wrong, ledger.wrong[:5]
    assert len(ledger.acknowledged) >= KILLS, "too few writes to mean anything"

    uow = UnitOfWork(trial_database.session_factory)
    with uow.reading():
        sites = {site.code: site.id for site in uow.session.scalars(select(Site))}
        users = {user.username: user.id for user in uow.session.scalars(select(User))}
        created = [(event.entity_type, event.entity_id) for event in uow.session.scalars(
            select(AuditEvent).where(AuditEvent.action.in_(["site.create", "user.create"])))]
    trial_database.dispose()

    present = {"site": sites, "user": users}
    missing = [(kind, key) for kind, key in ledger.acknowledged if key not in present[kind]]
    assert not missing, f"acknowledged writes lost: {missing[:5]}"
    rows = sorted([("site", str(i)) for i in sites.values()] + [("user", str(i)) for i in users.values()])
    assert sorted(created) == rows, "a row without its audit event, or an audit event without its row"
    assert len({key for _, key in ledger.acknowledged}) == len(ledger.acknowledged)

    verified = cli("audit", "verify", "--db", database_url)
    assert verified.exit_code == 0, verified.output
    if make_url(database_url).get_backend_name() == "sqlite":
        connection = sqlite3.connect(str(make_url(database_url).database))
        try:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            connection.close()

    log = server.log_path.read_text(encoding="utf-8", errors="replace")
    assert log.count("Application startup complete") == KILLS + 1
    for secret in (issued.token, PASSWORD, secret_key):
        assert secret not in log
    assert " 500 " not in log and "Traceback" not in log
