"""Randomizations per second with concurrent clients, on SQLite and (with --pg URL) on PostgreSQL.

    .venv/bin/python benchmarks/bench_randomize.py [--pg postgresql+psycopg://user@host:5432/db]
                                                  [--clients 16] [--subjects 320] [--sites 4]

What is measured: the full use case ``randomize_subject`` — lock the subject and the scheme, judge
eligibility again from the stored screening data, compute the stratum, generate the next list
position from the seed, write the allocation, the list position, the subject and two audit events,
commit — called by ``--clients`` threads at once, each with its own unit of work, until every
subject is randomized. The scheme is created first (as an admin does at go-live), so the numbers
are the steady state. Set-up (trial, sites, users, eligible consented subjects) is not timed; the
subjects are copies of one subject entered through the real screening service.

Afterwards the run is checked: one allocation per subject, positions 1..n per stratum without gaps,
the audit chain intact and the scheme verified from its seed. PostgreSQL runs in a fresh schema
that is dropped at the end. Results are printed as a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import secrets
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import func, select

from bench_databases import postgres_url, sqlite_url

from cmvtrial.config import load_settings
from cmvtrial.services import accounts, randomization_audit, randomizing, screening, subjects, trial_setup
from cmvtrial.services.audit_verification import verify_audit
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.database import open_database
from cmvtrial.store.tables import Allocation, FormInstance, ItemValue, RandomizationListEntry, StudyEvent, Subject

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests" / "fixtures" / "screening" / "eligible.json"
PASSWORD = "benchmark-passphrase"
PROTOCOL = "sle-cmv-il2"


@dataclass
class Result:
    backend: str
    clients: int
    subjects: int
    seconds: float
    latencies_ms: list[float]

    @property
    def per_second(self) -> float:
        return self.subjects / self.seconds

    def row(self) -> str:
        p50 = statistics.median(self.latencies_ms)
        p95 = statistics.quantiles(self.latencies_ms, n=20)[18]
        return (f"| {self.backend} | {self.clients} | {self.subjects} | {self.seconds:.2f} | {self.per_second:.0f} | "
                f"{p50:.0f} | {p95:.0f} |")


def prepare(url: str, sites: int, count: int) -> tuple[object, list[tuple[str, int]]]:
    """A trial with ``sites`` sites, an investigator each, and ``count`` eligible consented subjects."""
    now = datetime.now(UTC)
    # PostgreSQL is not local use: the scheme's seed is sealed under a key, a throwaway one per run.
    key = os.environ.get("CMVTRIAL_SECRET_KEY") or "bench-" + secrets.token_hex(32)
    database = open_database(url, load_settings(secret_key=key), create=True, require_current=False)
    trial_setup.initialise_trial(database, PROTOCOL, "admin", PASSWORD, now=now)
    uow = UnitOfWork(database.session_factory)
    admin = accounts.actor_for(uow, "admin")
    data = json.loads(RECORD.read_text(encoding="utf-8"))
    work: list[tuple[str, int]] = []
    for index in range(sites):
        code = f"SITE{index + 1:02d}"
        site = trial_setup.add_site(uow, admin, code, f"Benchmark site {index + 1}")
        username = f"inv{index + 1:02d}"
        accounts.add_user(uow, admin, username, PASSWORD, "investigator", code)
        investigator = accounts.actor_for(uow, username)
        template = subjects.register_subject(uow, investigator, code, "TEMPLATE").id
        screening.enter_screening_data(uow, investigator, template, data)
        screening.record_consent(uow, investigator, template, date.fromisoformat(data["screening_date"]))
        share = count // sites + (1 if index < count % sites else 0)
        work += [(username, subject_id) for subject_id in _clone(uow, template, site.id, share)]
    randomizing.setup_scheme(uow, admin, reason="benchmark go-live")
    return database, work


def _clone(uow: UnitOfWork, template_id: int, site_id: int, count: int) -> list[int]:
    with uow:
        template = uow.subjects.require(template_id)
        event = uow.session.scalars(select(StudyEvent).where(StudyEvent.subject_id == template_id)).one()
        form = uow.session.scalars(select(FormInstance).where(FormInstance.subject_id == template_id)).one()
        items = list(uow.session.scalars(select(ItemValue).where(ItemValue.subject_id == template_id)))
        ids = []
        for index in range(count):
            subject = Subject(site_id=site_id, screening_number=f"B{index:05d}", protocol_version_id=template.protocol_version_id,
                              status=template.status, eligibility=template.eligibility, consent_date=template.consent_date,
                              created_at=template.created_at, created_by_user_id=template.created_by_user_id)
            uow.session.add(subject)
            uow.session.flush()
            copy_event = StudyEvent(subject_id=subject.id, visit_code=event.visit_code, actual_date=event.actual_date,
                                    status=event.status, created_at=event.created_at)
            uow.session.add(copy_event)
            uow.session.flush()
            copy_form = FormInstance(study_event_id=copy_event.id, subject_id=subject.id, form_id=form.form_id,
                                     status=form.status, created_at=form.created_at, created_by_user_id=form.created_by_user_id)
            uow.session.add(copy_form)
            uow.session.flush()
            uow.session.add_all(
                ItemValue(form_instance_id=copy_form.id, subject_id=subject.id, item_id=item.item_id,
                          value_type=item.value_type, entered_value=item.entered_value, entered_unit=item.entered_unit,
                          normalized_number=item.normalized_number, normalized_text=item.normalized_text,
                          normalized_unit=item.normalized_unit, entered_by_user_id=item.entered_by_user_id,
                          entered_at=item.entered_at)
                for item in items
            )
            ids.append(subject.id)
        uow.commit()
    return ids


def run(backend: str, url: str, clients: int, sites: int, subjects: int) -> Result:
    database, work = prepare(url, sites, subjects)
    actors = {}
    lookup = UnitOfWork(database.session_factory)  # type: ignore[attr-defined]
    for username, _ in work:
        actors.setdefault(username, accounts.actor_for(lookup, username))
    pending: queue.Queue[tuple[str, int]] = queue.Queue()
    for item in work:
        pending.put(item)
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        uow = UnitOfWork(database.session_factory)  # type: ignore[attr-defined]
        start.wait()
        while True:
            try:
                username, subject_id = pending.get_nowait()
            except queue.Empty:
                return
            began = time.perf_counter()
            try:
                randomizing.randomize_subject(uow, actors[username], subject_id)
            except BaseException as error:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(error)
                continue
            with lock:
                latencies.append((time.perf_counter() - began) * 1000)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors:
        raise SystemExit(f"{backend}: {len(errors)} randomizations failed, first: {errors[0]!r}")
    _check(database, len(work))
    database.dispose()  # type: ignore[attr-defined]
    return Result(backend, clients, len(work), seconds, latencies)


def _check(database: object, expected: int) -> None:
    uow = UnitOfWork(database.session_factory)  # type: ignore[attr-defined]
    with uow.reading():
        allocated = uow.session.scalar(select(func.count(func.distinct(Allocation.subject_id))))
        total = uow.session.scalar(select(func.count()).select_from(Allocation))
        positions = uow.session.execute(
            select(RandomizationListEntry.stratum, func.count(), func.max(RandomizationListEntry.sequence))
            .group_by(RandomizationListEntry.stratum)
        ).all()
    assert allocated == total == expected, (allocated, total, expected)
    assert all(count == highest for _, count, highest in positions), positions
    assert verify_audit(uow).ok
    admin = accounts.actor_for(uow, "admin")
    check = randomization_audit.verify_randomization(uow, admin)
    assert check.ok, check.problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", help="PostgreSQL server URL (a fresh schema is used and dropped)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (threads)")
    parser.add_argument("--subjects", type=int, default=320, help="subjects to randomize per database")
    parser.add_argument("--sites", type=int, default=4, help="sites (each is a stratum)")
    options = parser.parse_args(argv)
    results = []
    with sqlite_url() as url:
        results.append(run("SQLite (WAL, file)", url, options.clients, options.sites, options.subjects))
    if options.pg:
        with postgres_url(options.pg) as url:
            results.append(run("PostgreSQL", url, options.clients, options.sites, options.subjects))
    print(f"Machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python "
          f"{sys.version.split()[0]}, {datetime.now(UTC):%Y-%m-%d}")
    print("| database | clients | randomizations | seconds | per second | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        print(result.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
