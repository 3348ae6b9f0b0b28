"""`cmvtrial serve --workers 2`: two server processes behind one port write to one database.

Four client threads create sites through the REST API at once; with two processes their writes
reach the database from both, so on SQLite they take turns on the file lock beside the database
(store/engine.py ``WriterQueue``) and on PostgreSQL on its row locks. Every acknowledged write must be
there with exactly one audit event, the audit chain must verify, and no request may fail.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import timedelta

import httpx
from reliability_support import cli, free_port
from sqlalchemy import select

from cmvtrial.services import api_tokens
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import AuditEvent, Site

WRITES_PER_CLIENT = 15


def test_two_worker_processes_write_to_one_database_without_losing_or_forking_anything(
        trial_database, admin, database_url, tmp_path, secret_key):
    issued = api_tokens.create_token(UnitOfWork(trial_database.session_factory), admin, "workers test",
                                     lifetime=timedelta(days=1))
    trial_database.dispose()
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-c", "from cmvtrial.adapters.cli.main import run; run()",
             "serve", "--db", database_url, "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            stdout=output, stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "CMVTRIAL_SECRET_KEY": secret_key, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    acknowledged: list[str] = []
    wrong: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client(prefix: str) -> None:
        with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {issued.token}"}) as http:
            for index in range(WRITES_PER_CLIENT):
                code = f"{prefix}{index:03d}"
                response = http.post("/api/v1/sites", json={"code": code, "name": f"Hospital {code}"})
                with lock:
                    (acknowledged.append(code) if response.status_code == 201
                     else wrong.append((response.status_code, response.text[:200])))

    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text(encoding="utf-8", errors="replace")
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up within 60 s"
            time.sleep(0.1)
        threads = [threading.Thread(target=client, args=(prefix,)) for prefix in ("WA", "WB", "WC", "WD")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert not wrong, wrong[:5]
    assert len(acknowledged) == 4 * WRITES_PER_CLIENT
    text = log.read_text(encoding="utf-8", errors="replace")
    assert text.count("Started server process") >= 2, text  # two workers really served
    uow = UnitOfWork(trial_database.session_factory)
    with uow.reading():
        sites = set(uow.session.scalars(select(Site.code)))
        created = list(uow.session.scalars(select(AuditEvent.entity_id).where(AuditEvent.action == "site.create")))
    trial_database.dispose()
    assert set(acknowledged) <= sites
    assert len(created) == len(set(created)) == len(sites)
    verified = cli("audit", "verify", "--db", database_url)
    assert verified.exit_code == 0, verified.output
