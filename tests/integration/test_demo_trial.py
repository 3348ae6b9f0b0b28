"""A virtual trial entered through the real services (services/demo_trial.py), on SQLite and PostgreSQL.

What "indistinguishable in structure from a real trial database" is checked as: the audit trail
verifies (`cmvtrial audit verify`), the report is built from the database (`cmvtrial report --db`)
and its CONSORT numbers are the simulation's, and each stored fact is the one the simulated course
implies — end of treatment on the first negative CMV-DNA of the arm the real randomization chose,
every dose given or held by the protocol's hold rules, every adverse event once and resolved,
every visit signed, every query closed, every lab-safety proposal decided.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from cmvtrial.adapters.cli.main import app
from cmvtrial.analysis.derivations import derive_datasets
from cmvtrial.analysis.report_tables import consort_counts
from cmvtrial.core.disposition import withdrawal_reason
from cmvtrial.errors import InvalidInput, Refused
from cmvtrial.protocols import load_shipped_protocol
from cmvtrial.services import accounts, demo_trial, subjects, trial_setup
from cmvtrial.services.analysis_data import build_trial_data
from cmvtrial.services.audit_verification import verify_audit
from cmvtrial.simulation.scenarios import load_shipped_scenario
from cmvtrial.simulation.virtual_trial import simulate_trial
from cmvtrial.store.tables import (
    AdverseEvent,
    Allocation,
    AuditEvent,
    DoseAdministration,
    LabSafetyProposal,
    Query,
    Signature,
    StudyEvent,
    Subject,
)

START = date(2024, 5, 6)
AS_OF = date(2025, 3, 1)
PASSWORD = "a-long-enough-password"
CLEAN = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}


def virtual(protocol_id: str, n: int, seed: int = 1, start: date = START):
    protocol, _text = load_shipped_protocol(protocol_id)
    return simulate_trial(protocol, load_shipped_scenario(protocol_id, "default"), seed, start, n)


def counted(uow, table, *where) -> int:
    with uow.reading():
        return uow.session.scalar(select(func.count()).select_from(table).where(*where)) or 0


@pytest.fixture
def passwords():
    """Predictable passwords for the staff the loader creates (the production ones are random)."""
    made = iter(f"demo-staff-password-{i:03d}" for i in range(1000))
    return lambda: next(made)


def test_a_loaded_trial_is_a_real_trial_database(trial_database, uow, admin, database_url, tmp_path, passwords):
    trial = virtual("sle-cmv-il2", 12)
    seen = []
    result = demo_trial.load_virtual_trial(trial_database.session_factory, admin, trial, as_of=AS_OF,
                                           progress=lambda done, total: seen.append((done, total)),
                                           make_password=passwords)

    assert result.skipped == []
    summary = trial.summary()
    assert (result.counts["screened"], result.counts["randomized"]) == (summary["screened"], summary["randomized"])
    assert seen[-1] == (summary["screened"], summary["screened"])
    assert sorted(result.sites_created) == sorted(site["code"] for site in trial.sites)
    assert {a.role for a in result.accounts} == {"coordinator", "investigator", "monitor"}

    # The audit trail verifies, and reads in date order after set-up (the trial was entered day by day).
    assert verify_audit(uow).ok
    with uow.reading():
        moments = [e.occurred_at for e in uow.session.scalars(select(AuditEvent).order_by(AuditEvent.sequence))]
    loaded = moments[3:]  # after the three events of `cmvtrial init`
    assert loaded == sorted(loaded) and loaded[-1].date() <= AS_OF
    verified = CliRunner().invoke(app, ["audit", "verify", "--db", database_url], env=CLEAN)
    assert verified.exit_code == 0, verified.output
    assert f"{len(moments)} events verified" in verified.stdout

    # Subjects: every candidate registered, the engine's screen failures, one allocation per randomized one.
    by_number = {c["id"]: c for c in trial.candidates}
    with uow.reading():
        rows = list(uow.session.scalars(select(Subject)))
        allocations = {a.subject_id: a for a in uow.session.scalars(select(Allocation))}
        statuses = Counter(subject.status for subject in rows)
        for subject in rows:
            candidate = by_number[subject.screening_number]
            if not candidate["randomized"]:
                assert subject.id not in allocations and subject.status == "screen_failed"
                criteria = [r.get("criterion") for r in subject.screen_failure_reasons]
                assert criteria == (candidate["screen_failure_criteria"] or [None])
                continue
            course = candidate["courses"][allocations[subject.id].arm_id]
            assert allocations[subject.id].allocated_at.date().isoformat() == candidate["randomization_date"]
            if course["cmv_negative"]:  # the data-entry service ended treatment on the first negative result
                expected = date.fromisoformat(candidate["randomization_date"]) + timedelta(days=course["days_to_negativity"])
                assert subject.end_of_treatment_date == expected
    assert len(rows) == summary["screened"] and len(allocations) == summary["randomized"]
    assert statuses["screen_failed"] == summary["not_eligible"] + summary["declined_consent"]
    # No simulated patient of this trial drops out; every one reaches the final visit by AS_OF and completes.
    assert statuses["completed"] == summary["randomized"] == result.counts["subjects_completed"]

    # Doses, adverse events, signatures, queries and proposals: all entered, decided and closed.
    numbers = {subject.id: subject.screening_number for subject in rows}
    courses = [by_number[numbers[subject_id]]["courses"][a.arm_id] for subject_id, a in allocations.items()]
    held = sum(1 for course in courses for dose in course["doses"] if not dose["given"])
    assert counted(uow, DoseAdministration, DoseAdministration.status == "held") == held == result.counts.get("doses_held", 0)
    assert counted(uow, DoseAdministration) == sum(len(course["doses"]) for course in courses)
    assert counted(uow, AdverseEvent) == sum(len(course["adverse_events"]) for course in courses)
    assert counted(uow, AdverseEvent, AdverseEvent.resolution_date.is_(None)) == 0
    done = counted(uow, StudyEvent, StudyEvent.status == "done", StudyEvent.visit_code != "SCR")
    assert done == result.counts["visits"] == counted(uow, Signature, Signature.invalidated_at.is_(None))
    assert counted(uow, Query) == result.counts.get("queries_opened", 0) == counted(uow, Query, Query.status == "closed")
    assert counted(uow, LabSafetyProposal, LabSafetyProposal.status == "pending") == 0

    # The report, from the database, tells the simulation's CONSORT numbers.
    accounts.add_user(uow, admin, "stat", PASSWORD, "statistician")
    out, numbers = tmp_path / "report.html", tmp_path / "report.json"
    report = CliRunner().invoke(app, ["report", "--db", database_url, "--as", "stat", "--out", str(out),
                                      "--json", str(numbers)], env=CLEAN)
    assert report.exit_code == 0, report.output
    consort = json.loads(numbers.read_text())["consort"]
    assert (consort["assessed"], consort["not_eligible"], consort["declined_consent"], consort["randomized"]) == (
        summary["screened"], summary["not_eligible"], summary["declined_consent"], summary["randomized"])
    arms = Counter(a.arm_id for a in allocations.values())
    assert {arm: entry["allocated"] for arm, entry in consort["allocation"].items()} == dict(arms)


@pytest.mark.parametrize("protocol_id", ["nct04225780"])  # the other shipped protocol, for once
def test_nothing_after_the_as_of_date_is_entered(trial_database, uow, admin, passwords, protocol_id):
    trial = virtual(protocol_id, 6, seed=2)
    as_of = date.fromisoformat(trial.randomized[-1]["randomization_date"]) + timedelta(days=10)
    result = demo_trial.load_virtual_trial(trial_database.session_factory, admin, trial, as_of=as_of,
                                           make_password=passwords, sign=False)
    assert result.skipped == [] and "signatures" not in result.counts
    assert result.counts["screened"] == sum(1 for c in trial.candidates if date.fromisoformat(c["screening_date"]) <= as_of)
    with uow.reading():
        assert max(e.actual_date for e in uow.session.scalars(select(StudyEvent)) if e.actual_date) <= as_of
        assert max(d.administered_on for d in uow.session.scalars(select(DoseAdministration))) <= as_of
        entered = uow.session.scalars(select(AuditEvent).where(AuditEvent.sequence > 3))  # after `cmvtrial init`
        assert max(e.occurred_at for e in entered).date() <= as_of
        assert {s.status for s in uow.session.scalars(select(Subject))} & {"randomized", "on_treatment"}
    assert counted(uow, Signature) == 0
    assert verify_audit(uow).ok


def test_a_trial_that_holds_subjects_is_refused_and_left_as_it_was(trial_database, uow, admin, now, passwords):
    trial_setup.add_site(uow, admin, "PKUPH", "Peking University People's Hospital")
    accounts.add_user(uow, admin, "coord", PASSWORD, "coordinator", "PKUPH")
    subjects.register_subject(uow, accounts.actor_for(uow, "coord"), "PKUPH", "S-001")
    before = verify_audit(uow).count
    assert demo_trial.trial_subject_count(trial_database.session_factory) == 1
    with pytest.raises(Refused, match="already holds 1 subject"):
        demo_trial.load_virtual_trial(trial_database.session_factory, admin, virtual("sle-cmv-il2", 2), as_of=AS_OF,
                                      make_password=passwords)
    assert verify_audit(uow).count == before


@pytest.mark.parametrize(
    ("simulated", "as_of", "error", "message"),
    [
        ("nct04225780", AS_OF, Refused, "runs protocol sle-cmv-il2"),
        ("sle-cmv-il2", START - timedelta(days=1), InvalidInput, "starts on"),
    ],
)
def test_a_trial_that_does_not_fit_is_refused_before_anything_is_written(trial_database, uow, admin, passwords,
                                                                         simulated, as_of, error, message):
    before = verify_audit(uow).count
    with pytest.raises(error, match=message):
        demo_trial.load_virtual_trial(trial_database.session_factory, admin, virtual(simulated, 2), as_of=as_of,
                                      make_password=passwords)
    assert verify_audit(uow).count == before


def test_dropouts_are_withdrawn_and_finished_subjects_completed(trial_database, uow, admin, passwords):
    """Seed 5 has dropouts lost to follow-up and dead as well as subjects who reach FU3M: each
    subject's end of study is the one its simulated course implies, and the report counts them."""
    trial = virtual("sle-cmv-il2", 12, seed=5)
    result = demo_trial.load_virtual_trial(trial_database.session_factory, admin, trial, as_of=AS_OF,
                                           make_password=passwords, sign=False)
    assert result.skipped == []
    by_number = {c["id"]: c for c in trial.candidates}
    expected, found = {}, {}
    with uow.reading():
        allocations = {a.subject_id: a for a in uow.session.scalars(select(Allocation))}
        for subject in uow.session.scalars(select(Subject).where(Subject.id.in_(list(allocations)))):
            course = by_number[subject.screening_number]["courses"][allocations[subject.id].arm_id]
            final = [v for v in course["visits"] if v["visit"] == "FU3M"]
            dropout = course["dropout"]
            if final and subject.end_of_treatment_date is not None and date.fromisoformat(final[0]["date"]) <= AS_OF:
                expected[subject.id] = ("completed", date.fromisoformat(final[0]["date"]), "completed")
            elif dropout and date.fromisoformat(dropout["date"]) <= AS_OF:
                reason = withdrawal_reason(dropout["reason"])
                expected[subject.id] = (reason.status, date.fromisoformat(dropout["date"]), reason.code)
            found[subject.id] = (subject.status, subject.end_of_study_date, subject.end_of_study_reason)
            if subject.status in ("withdrawn", "lost_to_follow_up", "died"):  # nothing planned after leaving
                planned = uow.session.scalars(select(StudyEvent).where(StudyEvent.subject_id == subject.id,
                                                                       StudyEvent.status == "planned"))
                assert all(e.target_date <= subject.end_of_study_date for e in planned)
    assert {k: v for k, v in found.items() if k in expected} == expected
    statuses = Counter(status for status, _day, _reason in expected.values())
    assert statuses["completed"] >= 1 and statuses["lost_to_follow_up"] >= 1 and statuses["died"] >= 1
    assert all(status not in ("withdrawn", "lost_to_follow_up", "died", "completed")
               for key, (status, _d, _r) in found.items() if key not in expected)
    assert result.counts["subjects_completed"] == statuses["completed"]
    assert verify_audit(uow).ok

    accounts.add_user(uow, admin, "stat", PASSWORD, "statistician")
    data = build_trial_data(uow, accounts.actor_for(uow, "stat"), data_cutoff=AS_OF)
    follow_up = consort_counts(data, derive_datasets(data).adsl, sorted(a.id for a in data.protocol.arms),
                               "itt")["follow_up"]
    assert sum(arm["completed"] for arm in follow_up.values()) == statuses["completed"]
    assert sum(arm["discontinued"] for arm in follow_up.values()) == statuses["lost_to_follow_up"] + statuses["died"]
    assert sum(arm["lost_to_follow_up"] for arm in follow_up.values()) == statuses["lost_to_follow_up"]

