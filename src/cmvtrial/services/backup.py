"""Backup and restore: `cmvtrial backup --out FILE` and `cmvtrial restore FILE --db URL`.

Why (21 CFR 11.10(c): records retrievable for the whole retention period; ICH E6(R3) §4.3.3 and
Annex 11 §7: backups whose integrity and restorability are checked — reference/standards.md P11-03,
E6-13, A11-05):

- **Online and consistent.** A backup is taken while the server keeps writing, as of one moment
  (store/snapshots.py: SQLite's backup API, pg_dump on an exported snapshot). The row count of every
  table and the audit trail's length and last hash are read from that same moment into a manifest.
- **Checked both ways.** The manifest carries the SHA-256 of the database copy; restore refuses a
  file whose copy does not match (``BackupInvalid``) before touching anything, and after restoring
  it compares every table's row count and the last audit hash with the manifest and verifies the
  whole audit chain. A restore that does not reproduce the backup is undone (``BackupFailed``).
- **Never over data.** Restore goes into an empty database only (``DatabaseNotEmpty`` otherwise),
  and a backup never overwrites an existing file.
- **Accountable.** Taking a backup is an admin's action, recorded in the audit trail with the
  file's checksum (ICH E6(R3) §4.2.2: workflow actions are audited).

The file is a gzip'd tar with two members: ``manifest.json`` and the copy (``database.sqlite3``
or ``database.pgdump``). The randomization seed inside it is sealed (services/sealing.py): the
backup is useless for guessing allocations without CMVTRIAL_SECRET_KEY, which is kept apart.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import URL, Connection, create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from cmvtrial import __version__
from cmvtrial.config import Settings
from cmvtrial.core.audit_chain import VerificationResult
from cmvtrial.errors import BackupFailed, BackupInvalid, DatabaseNotEmpty, InvalidInput, Refused
from cmvtrial.services import permissions
from cmvtrial.services.audit_verification import verify_audit
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store import snapshots
from cmvtrial.store.database import Database, open_database
from cmvtrial.store.engine import make_engine, parse_url, safe_url
from cmvtrial.store.schema import current_revision, head_revision

FORMAT = "cmvtrial-backup/1"
MANIFEST = "manifest.json"
PAYLOADS = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}
_CHUNK = 1 << 20


class BackupManifest(BaseModel):
    """What a backup holds, read from the same moment as the copy itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["cmvtrial-backup/1"]
    created_at: datetime
    cmvtrial_version: str
    backend: Literal["sqlite", "postgresql"]
    schema_revision: str
    schema_name: str | None = Field(description="PostgreSQL schema the trial lives in; None on SQLite.")
    source: str = Field(description="The database backed up, password hidden.")
    payload: Literal["database.sqlite3", "database.pgdump"]
    payload_bytes: int = Field(ge=0)
    payload_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tables: dict[str, int]
    audit_events: int = Field(ge=0)
    audit_last_sequence: int | None
    audit_last_hash: str | None
    audit_verified: bool = Field(description="Whether the audit chain verified in the copy.")

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    manifest: BackupManifest
    file_sha256: str


@dataclass(frozen=True, slots=True)
class RestoreResult:
    target: str
    manifest: BackupManifest
    audit: VerificationResult


# ------------------------------------------------------------------------------------------------
# Taking a backup


def take_backup(
    database: Database,
    out: Path,
    *,
    actor: Actor,
    settings: Settings | None = None,
    clock: Callable[[], datetime],
    reason: str | None = None,
) -> BackupResult:
    """Write a consistent backup of ``database`` to the new file ``out`` and audit it (admins)."""
    permissions.require(actor, "trial.backup")
    out = out.expanduser()
    if out.exists():
        raise InvalidInput(f"{out} already exists; a backup never overwrites a file: choose a new name", field="out")
    if not out.parent.is_dir():
        raise InvalidInput(f"there is no folder {out.parent} to write the backup into", field="out")
    url = database.engine.url
    backend = url.get_backend_name()
    if backend not in PAYLOADS:  # pragma: no cover - parse_url admits only these two
        raise InvalidInput(f"cannot back up a {backend} database")
    created_at = clock()
    with tempfile.TemporaryDirectory(prefix=".cmvtrial-backup-", dir=out.parent) as work:
        payload = Path(work) / PAYLOADS[backend]
        if backend == "sqlite":
            busy = (settings or Settings.model_construct()).sqlite_busy_timeout_ms
            snapshots.copy_sqlite(snapshots.sqlite_path(url), payload, busy_timeout_ms=busy)
            with _plain_sqlite(payload) as connection:
                facts = _facts(connection)
            schema_name = None
        else:
            with snapshots.exported_snapshot(database.engine) as (snapshot, schema_name, connection):
                facts = _facts(connection)
                snapshots.dump_postgres(url, schema_name, snapshot, payload)
        digest, size = _sha256_of(payload)
        manifest = BackupManifest(
            format=FORMAT, created_at=created_at, cmvtrial_version=__version__, backend=backend,  # type: ignore[arg-type]
            schema_revision=facts.revision, schema_name=schema_name, source=safe_url(url),
            payload=PAYLOADS[backend], payload_bytes=size, payload_sha256=digest,  # type: ignore[arg-type]
            tables=facts.tables, audit_events=facts.audit.count, audit_last_sequence=facts.audit.last_sequence,
            audit_last_hash=facts.audit.last_hash, audit_verified=facts.audit_ok,
        )
        partial = Path(work) / "backup.tar.gz"
        _write_archive(partial, manifest, payload)
        partial.chmod(0o600)  # it holds every record of the trial
        file_sha256, _ = _sha256_of(partial)
        try:
            os.link(partial, out)  # fails if ``out`` appeared meanwhile: never overwrite
        except FileExistsError:
            raise InvalidInput(f"{out} already exists; a backup never overwrites a file", field="out") from None
    _record_backup(database, actor, clock, out, manifest, file_sha256, reason)
    return BackupResult(out, manifest, file_sha256)


@dataclass(frozen=True, slots=True)
class _Facts:
    revision: str
    tables: dict[str, int]
    audit: snapshots.AuditTail
    audit_ok: bool


def _facts(connection: Connection) -> _Facts:
    """Counts, revision and audit verdict, all read through one connection (one moment)."""
    from alembic.migration import MigrationContext

    revision = MigrationContext.configure(connection).get_current_revision() or ""
    tables = snapshots.table_counts(connection)
    tail = snapshots.audit_tail(connection)
    uow = UnitOfWork(lambda: Session(bind=connection, join_transaction_mode="create_savepoint"))
    verdict = verify_audit(uow)
    return _Facts(revision, tables, tail, verdict.ok)


@contextmanager
def _plain_sqlite(path: Path) -> Iterator[Connection]:
    """A connection to a copy that changes nothing about it (no WAL switch, unlike the app's engine)."""
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        with engine.connect() as connection, connection.begin():
            yield connection
    finally:
        engine.dispose()


def _write_archive(path: Path, manifest: BackupManifest, payload: Path) -> None:
    body = manifest.model_dump_json(indent=2).encode("utf-8")
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(body), int(manifest.created_at.timestamp()), 0o600
        archive.addfile(info, io.BytesIO(body))
        entry = archive.gettarinfo(str(payload), arcname=manifest.payload)
        entry.mode, entry.uid, entry.gid, entry.uname, entry.gname = 0o600, 0, 0, "", ""
        with payload.open("rb") as handle:
            archive.addfile(entry, handle)


def _record_backup(
    database: Database, actor: Actor, clock: Callable[[], datetime], out: Path, manifest: BackupManifest,
    file_sha256: str, reason: str | None,
) -> None:
    uow = UnitOfWork(database.session_factory, clock=clock)
    with uow:
        trial = uow.trial.current()
        entity = trial if trial is not None else ("trial", "1")
        uow.audit.record(
            actor, "trial.backup", entity,
            after={"file": out.name, "file_sha256": file_sha256, "payload_sha256": manifest.payload_sha256,
                   "audit_events": manifest.audit_events, "audit_last_hash": manifest.audit_last_hash,
                   "rows": manifest.rows},
            reason=reason,
        )
        uow.commit()


def _sha256_of(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# ------------------------------------------------------------------------------------------------
# Reading and checking a backup


def read_manifest(path: Path) -> BackupManifest:
    """The manifest of a backup file, without extracting or checking the copy."""
    with _open_archive(path) as archive:
        return _manifest_of(archive, path)


@contextmanager
def _open_archive(path: Path) -> Iterator[tarfile.TarFile]:
    if not path.is_file():
        raise InvalidInput(f"there is no backup file at {path}", field="file")
    try:
        with tarfile.open(path, "r:gz") as archive:
            yield archive
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise BackupInvalid(f"{path} is not a cmvtrial backup (not a readable gzip'd tar: {error})",
                            file=str(path)) from error


def _manifest_of(archive: tarfile.TarFile, path: Path) -> BackupManifest:
    members = {member.name: member for member in archive.getmembers()}
    member = members.get(MANIFEST)
    if member is None or not member.isfile():
        raise BackupInvalid(f"{path} is not a cmvtrial backup: it has no {MANIFEST}", file=str(path))
    handle = archive.extractfile(member)
    assert handle is not None
    try:
        manifest = BackupManifest.model_validate(json.loads(handle.read(1 << 20).decode("utf-8")))
    except (ValueError, ValidationError) as error:
        raise BackupInvalid(f"{path} has an unreadable manifest: {str(error).splitlines()[0]}",
                            file=str(path)) from error
    unexpected = sorted(set(members) - {MANIFEST, manifest.payload})
    if unexpected:
        raise BackupInvalid(f"{path} holds files a cmvtrial backup never has: {', '.join(unexpected)}",
                            file=str(path))
    return manifest


def extract_checked(path: Path, destination: Path) -> BackupManifest:
    """Extract the copy to ``destination`` and check its size and SHA-256 against the manifest."""
    with _open_archive(path) as archive:
        manifest = _manifest_of(archive, path)
        member = archive.getmember(manifest.payload) if manifest.payload in archive.getnames() else None
        if member is None or not member.isfile():
            raise BackupInvalid(f"{path} lacks the database copy {manifest.payload}", file=str(path))
        source = archive.extractfile(member)
        assert source is not None
        digest, size = hashlib.sha256(), 0
        try:
            with destination.open("wb") as target:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    target.write(chunk)
        except (tarfile.TarError, EOFError, OSError) as error:
            raise BackupInvalid(f"{path} is damaged: {error}", file=str(path)) from error
    if size != manifest.payload_bytes or digest.hexdigest() != manifest.payload_sha256:
        raise BackupInvalid(
            f"{path} is damaged or altered: its database copy has SHA-256 {digest.hexdigest()} ({size} bytes), "
            f"the manifest says {manifest.payload_sha256} ({manifest.payload_bytes} bytes); nothing was restored",
            file=str(path), expected=manifest.payload_sha256, found=digest.hexdigest(),
        )
    return manifest


# ------------------------------------------------------------------------------------------------
# Restoring


def restore_backup(path: Path, target_url: str, settings: Settings | None = None) -> RestoreResult:
    """Restore the backup at ``path`` into the empty database at ``target_url`` and prove it."""
    path = path.expanduser()
    url = parse_url(target_url)
    manifest = read_manifest(path)
    backend = url.get_backend_name()
    if manifest.backend != backend:
        raise InvalidInput(
            f"{path} is a backup of a {manifest.backend} database; restore it into {manifest.backend}, not {backend}",
            field="db",
        )
    if manifest.schema_revision != head_revision():
        raise Refused(
            f"{path} was written at schema revision {manifest.schema_revision}, this cmvtrial is at "
            f"{head_revision()}; restore with cmvtrial {manifest.cmvtrial_version}, then upgrade",
        )
    if backend == "sqlite":
        return _restore_sqlite(path, url, manifest, settings)
    return _restore_postgres(path, url, manifest, settings)


def _restore_sqlite(path: Path, url: URL, manifest: BackupManifest, settings: Settings | None) -> RestoreResult:
    target = snapshots.sqlite_path(url).expanduser()
    if not target.parent.is_dir():
        raise InvalidInput(f"there is no folder {target.parent} to restore into", field="db")
    snapshots.require_empty_sqlite_target(target)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.restoring-", dir=target.parent))
    staged = work / target.name
    try:
        extract_checked(path, staged)
        snapshots.check_sqlite_file(staged)
        audit = _prove(f"sqlite:///{staged}", manifest, settings)
        snapshots.install_sqlite_file(staged, target)
    finally:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()
    return RestoreResult(safe_url(url), manifest, audit)


def _restore_postgres(path: Path, url: URL, manifest: BackupManifest, settings: Settings | None) -> RestoreResult:
    engine = make_engine(url, settings)
    try:
        schema = snapshots.current_schema(engine)
        if manifest.schema_name != schema:
            raise Refused(
                f"{path} holds schema '{manifest.schema_name}' but {safe_url(url)} works in schema '{schema}'; "
                f"restore into a database whose search_path is '{manifest.schema_name}'",
            )
        exists, objects = snapshots.schema_objects(engine, schema)
        if objects:
            raise DatabaseNotEmpty(
                f"schema '{schema}' of {safe_url(url)} already holds {objects} tables, sequences or functions; "
                "a restore never overwrites: restore into an empty database",
                database=safe_url(url), objects=objects,
            )
        with tempfile.TemporaryDirectory(prefix="cmvtrial-restore-") as work:
            dump = Path(work) / manifest.payload
            extract_checked(path, dump)
            snapshots.restore_postgres(url, dump, schema_exists=exists, schema=schema)
        try:
            audit = _prove(url.render_as_string(hide_password=False), manifest, settings)
        except BaseException:
            snapshots.drop_restored(engine, schema, keep_schema=exists)
            raise
    finally:
        engine.dispose()
    return RestoreResult(safe_url(url), manifest, audit)


def _prove(url: str, manifest: BackupManifest, settings: Settings | None) -> VerificationResult:
    """The restored database is at the manifest's revision, with its row counts and audit trail."""
    database = open_database(url, settings, require_current=False)
    try:
        revision = current_revision(database.engine)
        with database.engine.connect() as connection:
            tables = snapshots.table_counts(connection)
        audit = verify_audit(UnitOfWork(database.session_factory))
    finally:
        database.dispose()
    problems = []
    if revision != manifest.schema_revision:
        problems.append(f"schema revision {revision}, not {manifest.schema_revision}")
    differing = {name: (tables.get(name), count) for name, count in manifest.tables.items() if tables.get(name) != count}
    if differing:
        problems.append("row counts differ: " + ", ".join(f"{n} {got} (backup {want})" for n, (got, want) in differing.items()))
    if audit.count != manifest.audit_events or audit.last_hash != manifest.audit_last_hash:
        problems.append(f"audit trail has {audit.count} events ending {audit.last_hash}, the backup "
                        f"{manifest.audit_events} ending {manifest.audit_last_hash}")
    if manifest.audit_verified and not audit.ok:
        problems.append(f"audit chain broken at event {audit.first_broken_sequence}: {audit.reason}")
    if problems:
        raise BackupFailed("the restored database does not reproduce the backup, so it was removed: " + "; ".join(problems))
    return audit
