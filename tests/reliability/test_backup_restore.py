"""Backup while writing, restore into an empty database, and the refusals (issue 10; P11-03, A11-05).

On SQLite and, when CMVTRIAL_TEST_PG_URL is set, PostgreSQL (pg_dump / pg_restore).
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import audit_hashes, cli, empty_target, row_counts
from sqlalchemy import select

from cmvtrial.config import Settings
from cmvtrial.errors import BackupInvalid, DatabaseNotEmpty, Forbidden, InvalidInput
from cmvtrial.services import accounts, randomizing, trial_setup
from cmvtrial.services.audit_verification import verify_audit
from cmvtrial.services.backup import read_manifest, restore_backup, take_backup
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.database import Database, open_database
from cmvtrial.store.tables import AuditEvent, RandomizationScheme


def utc_now() -> datetime:
    return datetime.now(UTC)


def write_sites(database: Database, admin, prefix: str, stop: threading.Event, done: list[str]) -> None:
    uow = UnitOfWork(database.session_factory)
    index = 0
    while not stop.is_set() and index < 400:
        code = f"{prefix}{index:03d}"
        trial_setup.add_site(uow, admin, code, f"Hospital {code}")
        done.append(code)
        index += 1


def test_a_backup_taken_while_writing_restores_exactly_and_verifies(trial_database, admin, tmp_path, database_url):
    stop, written = threading.Event(), [[], []]
    writers = [threading.Thread(target=write_sites, args=(trial_database, admin, prefix, stop, done))
               for prefix, done in zip(("WA", "WB"), written, strict=True)]
    for writer in writers:
        writer.start()
    try:
        while sum(map(len, written)) < 10:
            threading.Event().wait(0.01)
        result = take_backup(trial_database, tmp_path / "trial.backup", actor=admin, clock=utc_now,
                             settings=Settings(secret_key="x" * 40), reason="nightly")
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    manifest = result.manifest
    assert manifest.audit_verified and manifest.tables["sites"] >= 10
    assert manifest.tables["audit_events"] == manifest.audit_events

    with empty_target(database_url, tmp_path) as target:
        restored = restore_backup(result.path, target)
        assert restored.audit.ok and restored.audit.count == manifest.audit_events
        counts = row_counts(target)
        assert all(counts[name] == manifest.tables[name] for name in counts)
        # The copy is one moment of the live trail: its events are exactly the live trail's first ones.
        copy, live = audit_hashes(target), audit_hashes(database_url)
        assert copy == live[: len(copy)] and copy[-1][1] == manifest.audit_last_hash
        assert cli("audit", "verify", "--db", target).exit_code == 0

    uow = UnitOfWork(trial_database.session_factory)
    with uow.reading():
        event = uow.session.scalars(select(AuditEvent).where(AuditEvent.action == "trial.backup")).one()
        assert json.loads(event.after)["file_sha256"] == result.file_sha256 and event.reason == "nightly"
    assert verify_audit(uow).ok


def test_restore_refuses_a_database_that_is_not_empty_and_changes_nothing(trial_database, admin, tmp_path, database_url):
    result = take_backup(trial_database, tmp_path / "b", actor=admin, clock=utc_now)
    before = row_counts(database_url)
    with pytest.raises(DatabaseNotEmpty):
        restore_backup(result.path, database_url)
    assert row_counts(database_url) == before


def test_an_altered_backup_is_refused_before_anything_is_restored(trial_database, admin, tmp_path, database_url):
    result = take_backup(trial_database, tmp_path / "b", actor=admin, clock=utc_now)
    altered = tmp_path / "altered"
    with tarfile.open(result.path, "r:gz") as original, tarfile.open(altered, "w:gz") as copy:
        for member in original.getmembers():
            data = bytearray(original.extractfile(member).read())  # type: ignore[union-attr]
            if member.name != "manifest.json":
                data[len(data) // 2] ^= 0x01  # one bit flipped in the database copy
            copy.addfile(member, io.BytesIO(bytes(data)))
    with empty_target(database_url, tmp_path) as target:
        with pytest.raises(BackupInvalid, match="damaged or altered"):
            restore_backup(altered, target)
        assert sum(row_counts_or_empty(target).values()) == 0


def row_counts_or_empty(url: str) -> dict[str, int]:
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return {}
    try:
        return row_counts(url)
    except Exception:  # no tables at all: nothing was restored
        return {}


def test_only_an_admin_takes_a_backup_and_a_refusal_writes_nothing(trial_database, admin, tmp_path):
    uow = UnitOfWork(trial_database.session_factory)
    trial_setup.add_site(uow, admin, "PKUPH", "Peking")
    accounts.add_user(uow, admin, "stat", "a-long-password-1", "statistician")
    before = verify_audit(uow).count
    with pytest.raises(Forbidden):
        take_backup(trial_database, tmp_path / "b", actor=accounts.actor_for(uow, "stat"), clock=utc_now)
    assert not (tmp_path / "b").exists() and verify_audit(uow).count == before
    (tmp_path / "taken").write_text("precious", encoding="utf-8")
    with pytest.raises(InvalidInput, match="never overwrites"):
        take_backup(trial_database, tmp_path / "taken", actor=admin, clock=utc_now)
    assert (tmp_path / "taken").read_text(encoding="utf-8") == "precious" and verify_audit(uow).count == before
    assert list(tmp_path.iterdir()) == [tmp_path / "taken"]  # no partial files left behind


def test_the_seed_is_sealed_in_the_database_and_in_the_backup(trial_database, admin, tmp_path):
    uow = UnitOfWork(trial_database.session_factory)
    randomizing.setup_scheme(uow, admin, reason="go-live")
    with uow.reading():
        scheme = uow.session.scalars(select(RandomizationScheme)).one()
        seed = randomizing.scheme_seed(uow, scheme)
        assert seed not in scheme.sealed_seed and scheme.sealed_seed.startswith("v1.")
    result = take_backup(trial_database, tmp_path / "b", actor=admin, clock=utc_now)
    with tarfile.open(result.path, "r:gz") as archive:
        payload = archive.extractfile(result.manifest.payload).read()  # type: ignore[union-attr]
    assert seed.encode() not in payload and bytes.fromhex(seed) not in payload


# --- files that are not backups -------------------------------------------------------------------


def tar_with(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a cmvtrial backup"),
        (b"SQLite format 3\x00" + b"\x00" * 100, "not a cmvtrial backup"),
        (tar_with({"database.sqlite3": b"x"}), f"no {'manifest.json'}"),
        (tar_with({"manifest.json": b"{not json"}), "unreadable manifest"),
        (tar_with({"manifest.json": b'{"format": "cmvtrial-backup/9"}'}), "unreadable manifest"),
        (tar_with({"manifest.json": b"[]"}), "unreadable manifest"),
    ],
)
def test_a_file_that_is_not_a_backup_is_refused_with_a_reason(tmp_path, content, message):
    path = tmp_path / "not-a-backup"
    path.write_bytes(content)
    with pytest.raises(BackupInvalid, match=message):
        restore_backup(path, f"sqlite:///{tmp_path / 'target.db'}")
    assert not (tmp_path / "target.db").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=2048), gzip_it=st.booleans())
def test_fuzz_any_bytes_are_refused_cleanly_and_restore_nothing(tmp_path, content, gzip_it):
    """Whatever the file holds, restore either refuses it with a domain error or (never, here)
    restores; it never crashes and never leaves a target behind."""
    path = tmp_path / "fuzzed"
    path.write_bytes(tar_with({"manifest.json": content}) if gzip_it else content)
    with pytest.raises((BackupInvalid, InvalidInput)):
        restore_backup(path, f"sqlite:///{tmp_path / 'fuzz-target.db'}")
    assert not (tmp_path / "fuzz-target.db").exists()


def test_a_backup_of_one_database_kind_is_not_restored_into_another(trial_database, admin, tmp_path, database_url):
    result = take_backup(trial_database, tmp_path / "b", actor=admin, clock=utc_now)
    other = "postgresql+psycopg://nobody@127.0.0.1:1/x" if database_url.startswith("sqlite") else f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(InvalidInput, match="restore it into"):
        restore_backup(result.path, other)
    assert read_manifest(result.path).backend in database_url


# --- the command line ------------------------------------------------------------------------------


def test_backup_and_restore_from_the_command_line(database_url, protocol_id, tmp_path):
    assert cli("init", "--protocol", protocol_id, "--db", database_url, CMVTRIAL_ADMIN_PASSWORD="a-long-password-1").exit_code == 0
    out = tmp_path / "cli.backup"
    taken = cli("backup", "--out", str(out), "--db", database_url, "--reason", "before upgrade")
    assert taken.exit_code == 0, taken.output
    assert "SHA-256 of the file" in taken.stdout and "audit events" in taken.stdout
    again = cli("backup", "--out", str(out), "--db", database_url)
    assert again.exit_code == 2 and again.stderr.startswith("error [invalid_input]:") and len(again.stderr.splitlines()) == 1
    with empty_target(database_url, tmp_path) as target:
        restored = cli("restore", str(out), "--db", target)
        assert restored.exit_code == 0, restored.output
        assert "audit trail verified" in restored.stdout
        refused = cli("restore", str(out), "--db", target)
        assert refused.exit_code == 1 and refused.stderr.startswith("error [database_not_empty]:")
        database = open_database(target)
        try:
            uow = UnitOfWork(database.session_factory)
            assert verify_audit(uow).ok
        finally:
            database.dispose()
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x1f\x8b garbage")
    bad = cli("restore", str(garbage), "--db", f"sqlite:///{tmp_path / 'g.db'}")
    assert bad.exit_code == 2 and bad.stderr.startswith("error [backup_invalid]:") and "Traceback" not in bad.output
