"""Lab values entered through the REST API by concurrent clients, against a `cmvtrial serve`
subprocess on 127.0.0.1: sustained writes per second and p50/p99 latency, on SQLite and (with
--pg URL) on PostgreSQL.

    .venv/bin/python benchmarks/bench_api_load.py [--pg postgresql+psycopg://user@host:5432/db]
        [--clients 8] [--seconds 15] [--warmup 3] [--subjects 32] [--workers 1,2] [--repeat 1] [--write]

What one write is: ``POST /api/v1/subjects/{id}/visits/BL/data`` with a complete blood count whose
values differ from what is stored, as a site's lab import would send it, authenticated by a bearer
token. The server does everything it does for a person: resolves the token, locks the subject,
merges and validates the whole form (types, units, hard and soft limits, edit checks), writes each
changed value with its old version in the audit trail (hash-chained), sends each lab value with a
LOINC code to the lab-safety review, re-runs the CMV-DNA stop rule, invalidates signatures, commits.
A write is counted when the answer is 200 with ``changed: true``.

How it runs: the trial (a site, a coordinator, ``--subjects`` randomized subjects entered through the
real screening, consent and randomization services) is prepared in this process; then `cmvtrial
serve` starts as a subprocess (``--workers`` > 1 runs that many server processes behind one port,
`cmvtrial serve --workers`) and ``--clients`` threads here, each with one keep-alive connection
(stdlib http.client, so the clients cost little CPU), send writes for their own subjects until the
clock runs out. Requests in the first ``--warmup`` seconds are not counted. Every loop is bounded (by
the deadline and ``MAX_REQUESTS``) and talks to 127.0.0.1 only. Afterwards the audit chain is
verified and the number of ``item_value.create``/``update`` events checked against the writes counted.

``--repeat N`` runs every configuration N times (a fresh database and server each time) and prints
the median writes/s of each: a shared virtual machine's speed drifts by a fifth and more from one
minute to the next, so one run says little. ``--write`` replaces this benchmark's rows in
docs/benchmarks.md (between its markers).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import func, select

from bench_databases import postgres_url, sqlite_url

from cmvtrial.config import load_settings
from cmvtrial.services import accounts, randomizing, screening, subjects, trial_setup
from cmvtrial.services.audit_verification import verify_audit
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.database import open_database
from cmvtrial.store.tables import AuditEvent

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
RECORD = ROOT / "tests" / "fixtures" / "screening" / "eligible.json"
PASSWORD = "benchmark-passphrase"
PROTOCOL = "sle-cmv-il2"
SITE = "BENCH"
HOST = "127.0.0.1"
#: A bound on every client's loop, whatever the deadline.
MAX_REQUESTS = 200_000
#: The secret key `serve` needs off local use (PostgreSQL): a throwaway one per run.
BENCH_KEY = "bench-" + uuid.uuid4().hex + uuid.uuid4().hex
START_MARK, END_MARK = "<!-- bench_api_load:start -->", "<!-- bench_api_load:end -->"


@dataclass
class Result:
    backend: str
    clients: int
    workers: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    #: CPU seconds the server processes and these clients used while writes were counted.
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def writes(self) -> int:
        return len(self.latencies_ms)

    @property
    def per_second(self) -> float:
        return self.writes / self.seconds

    def percentile(self, p: int) -> float:
        return statistics.quantiles(self.latencies_ms, n=100)[p - 1]

    def cpu_note(self) -> str:
        per_write = 1000 / max(self.writes, 1)
        return (f"{self.backend}: server CPU {self.server_cpu_s * per_write:.2f} ms a write, "
                f"clients {self.client_cpu_s * per_write:.2f} ms a write")

    def row(self, machine: str) -> str:
        errors = sum(self.errors.values())
        return (f"| {date.today().isoformat()} | {machine} | {self.backend} | {self.clients} | {self.workers} | "
                f"{self.writes:,} in {self.seconds:.0f} s | **{self.per_second:,.0f}** | "
                f"{statistics.median(self.latencies_ms):.1f} ms | {self.percentile(99):.1f} ms | "
                f"{self.server_cpu_s * 1000 / max(self.writes, 1):.2f} ms | {errors} |")


# --- databases -----------------------------------------------------------------------------


def prepare(url: str, count: int) -> list[int]:
    """A trial with one site, a coordinator and ``count`` randomized subjects (real services)."""
    database = open_database(url, load_settings(secret_key=BENCH_KEY), create=True, require_current=False)
    try:
        trial_setup.initialise_trial(database, PROTOCOL, "admin", PASSWORD, now=datetime.now(UTC))
        uow = UnitOfWork(database.session_factory)
        admin = accounts.actor_for(uow, "admin")
        trial_setup.add_site(uow, admin, SITE, "Benchmark site")
        accounts.add_user(uow, admin, "coordinator", PASSWORD, "coordinator", SITE)
        coordinator = accounts.actor_for(uow, "coordinator")
        record = json.loads(RECORD.read_text(encoding="utf-8"))
        randomizing.setup_scheme(uow, admin, reason="benchmark go-live")
        ids = []
        for index in range(count):
            subject = subjects.register_subject(uow, coordinator, SITE, f"B{index:04d}").id
            screening.enter_screening_data(uow, coordinator, subject, record)
            screening.record_consent(uow, coordinator, subject, date.fromisoformat(record["screening_date"]))
            randomizing.randomize_subject(uow, coordinator, subject)
            ids.append(subject)
        return ids
    finally:
        database.dispose()


# --- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, IndexError, ValueError):
        return 0.0
    return total + sum(process_cpu_seconds(int(child)) for child in children)


@contextmanager
def served(url: str, workers: int) -> Iterator[tuple[int, int]]:
    """`cmvtrial serve --workers N` on a free loopback port."""
    port = free_port()
    env = {"CMVTRIAL_SECRET_KEY": BENCH_KEY, **os.environ, "CMVTRIAL_DATABASE_URL": url}
    command = [str(Path(sys.executable).with_name("cmvtrial")), "serve", "--host", HOST, "--port", str(port),
               "--workers", str(workers)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server stopped: {process.stderr.read().decode() if process.stderr else ''}")
            try:
                connection = http.client.HTTPConnection(HOST, port, timeout=1)
                connection.request("GET", "/api/v1/health")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not answer within 30 s")
            time.sleep(0.1)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bearer_token(port: int) -> str:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    body = json.dumps({"username": "coordinator", "password": PASSWORD, "name": "load benchmark"})
    connection.request("POST", "/api/v1/auth/token", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = json.loads(response.read())
    if response.status != 201:
        raise SystemExit(f"no token: {payload}")
    return str(payload["token"])


# --- the clients ---------------------------------------------------------------------------


def hematology(n: int) -> dict[str, object]:
    """A complete blood count that differs from the previous one (so every write changes data)."""
    return {"wbc": round(4.0 + (n % 40) * 0.1, 1), "anc": 2.5, "lymphocytes": 1.2, "platelets": 180 + n % 50,
            "hemoglobin": 125}


def load(port: int, token: str, subject_ids: list[int], clients: int, seconds: float, warmup: float,
         backend: str, workers: int, server_pid: int) -> Result:
    result = Result(backend, clients, workers, seconds)
    lock = threading.Lock()
    begin = threading.Barrier(clients + 1)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    times: dict[str, float] = {}

    def client(number: int) -> None:
        mine = subject_ids[number::clients]
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        latencies: list[float] = []
        errors: dict[str, int] = {}
        begin.wait()
        counted_from, deadline = times["counted_from"], times["deadline"]
        for n in range(MAX_REQUESTS):
            started = time.perf_counter()
            if started >= deadline:
                break
            subject = mine[n % len(mine)]
            body = json.dumps({"forms": {"hematology": hematology(n // len(mine) + number)}, "reason": "lab import"})
            try:
                connection.request("POST", f"/api/v1/subjects/{subject}/visits/BL/data", body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as error:
                errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                connection.close()
                connection = http.client.HTTPConnection(HOST, port, timeout=30)
                continue
            elapsed = (time.perf_counter() - started) * 1000
            if started < counted_from:
                continue
            if response.status == 200 and json.loads(payload).get("changed"):
                latencies.append(elapsed)
            else:
                key = str(response.status)
                errors[key] = errors.get(key, 0) + 1
        connection.close()
        with lock:
            result.latencies_ms.extend(latencies)
            for key, value in errors.items():
                result.errors[key] = result.errors.get(key, 0) + value

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    times.update(counted_from=now + warmup, deadline=now + warmup + seconds)
    begin.wait()
    time.sleep(max(0.0, times["counted_from"] - time.perf_counter()))
    server_from, client_from = process_cpu_seconds(server_pid), time.process_time()
    time.sleep(max(0.0, times["deadline"] - time.perf_counter()))
    result.server_cpu_s = process_cpu_seconds(server_pid) - server_from
    result.client_cpu_s = time.process_time() - client_from
    for thread in threads:
        thread.join()
    return result


def check(url: str, writes: int) -> None:
    database = open_database(url, load_settings(secret_key=BENCH_KEY))
    try:
        uow = UnitOfWork(database.session_factory)
        verification = verify_audit(uow)
        if not verification.ok:
            raise SystemExit(f"the audit chain is broken after the run: {verification.reason}")
        with uow.reading():
            # A subject's first write creates its values, every later one changes them.
            changes = uow.session.scalar(select(func.count()).select_from(AuditEvent).where(
                AuditEvent.action.in_(("item_value.create", "item_value.update"))))
        if (changes or 0) < writes:
            raise SystemExit(f"{writes} writes counted but only {changes} item_value create/update audit events")
    finally:
        database.dispose()


def run(backend: str, url: str, args: argparse.Namespace) -> Result:
    ids = prepare(url, args.subjects)
    with served(url, args.workers) as (port, pid):
        token = bearer_token(port)
        result = load(port, token, ids, args.clients, args.seconds, args.warmup, backend, args.workers, pid)
    check(url, result.writes)
    return result


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {model}"


def medians(results: list[Result]) -> dict[tuple[str, int], list[float]]:
    """Writes/s of every run, by database and server processes."""
    rates: dict[tuple[str, int], list[float]] = {}
    for result in results:
        rates.setdefault((result.backend, result.workers), []).append(result.per_second)
    return rates


def write_rows(rows: list[str]) -> None:
    text = DOCS.read_text(encoding="utf-8")
    if START_MARK not in text:
        raise SystemExit(f"{DOCS} has no {START_MARK} section; add it first")
    head, rest = text.split(START_MARK, 1)
    _old, tail = rest.split(END_MARK, 1)
    DOCS.write_text(head + START_MARK + "\n" + "\n".join(rows) + "\n" + END_MARK + tail, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", help="a PostgreSQL server URL: also run there (in a fresh schema, dropped after)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long writes are counted")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of writes not counted first")
    parser.add_argument("--subjects", type=int, default=32, help="randomized subjects the clients write for")
    parser.add_argument("--workers", default="1,2",
                        help="server processes (`cmvtrial serve --workers`), a comma list: one run each")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every configuration (medians printed)")
    parser.add_argument("--write", action="store_true", help="replace this benchmark's rows in docs/benchmarks.md")
    args = parser.parse_args()
    if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 600 or args.subjects < args.clients:
        parser.error("1-256 clients, at most 600 s, and at least one subject per client")
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat: 1 to 20 runs")
    try:
        worker_counts = [int(part) for part in args.workers.split(",")]
    except ValueError:
        parser.error("--workers takes whole numbers separated by commas, e.g. 1,2")
    if not all(1 <= count <= 16 for count in worker_counts):
        parser.error("--workers: 1 to 16 server processes")
    results = []
    for _ in range(args.repeat):
        for workers in worker_counts:
            args.workers = workers
            with sqlite_url("cmvtrial-bench-api-") as url:
                results.append(run("SQLite (WAL, file)", url, args))
            if args.pg:
                with postgres_url(args.pg) as url:
                    results.append(run("PostgreSQL", url, args))
    results.sort(key=lambda result: (result.workers, result.backend != "SQLite (WAL, file)"))
    rows = [result.row(machine()) for result in results]
    print(f"load average after the runs (1/5/15 min): {' / '.join(f'{value:.1f}' for value in os.getloadavg())}")
    print("| date | machine | database | clients | server processes | writes | writes/s | p50 | p99 | server CPU a write | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    for result in results:
        print(result.cpu_note())
        if result.errors:
            print(f"{result.backend}: errors {result.errors}", file=sys.stderr)
    if args.repeat > 1:
        for (backend, workers), rates in medians(results).items():
            print(f"{backend}, {workers} server process(es): median {statistics.median(rates):,.0f} writes/s "
                  f"over {len(rates)} runs ({min(rates):,.0f}–{max(rates):,.0f})")
    if args.write:
        write_rows(rows)


if __name__ == "__main__":
    main()
