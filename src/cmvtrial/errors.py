"""Domain errors: every refusal cmvtrial gives has a stable code, a human message and details.

The hierarchy::

    CmvtrialError
    ├── InvalidInput            bad input; nothing changed            (HTTP 422, exit 2)
    │   ├── ProtocolInvalid     a protocol file with problems, each with its location
    │   ├── ScenarioInvalid     a simulation scenario file with problems, each with its location
    │   ├── UnitError           a unit the quantity does not accept
    │   ├── OutOfRange          a value outside its hard limits
    │   └── BackupInvalid       a backup file that is not one, or whose checksum does not match
    ├── NotFound                the thing named does not exist        (HTTP 404, exit 1)
    ├── Forbidden               the actor's role or site does not allow it (HTTP 403, exit 1)
    │   └── CsrfRejected        a form or cookie-authenticated API call without its CSRF token
    ├── Refused                 allowed in general, not in this state (HTTP 409, exit 1)
    │   ├── AlreadyExists
    │   ├── AlreadyInitialised
    │   ├── NotEligible
    │   ├── AlreadyRandomized
    │   ├── NotConsented        randomizing a subject whose consent is not recorded
    │   ├── OutsideVisitWindow
    │   ├── DrugNotInArm        a dose of a drug the subject's arm does not receive
    │   ├── OutsideTreatmentPeriod  a dose before treatment starts or after it ended
    │   ├── NotRandomized       ending the study of a subject who was never randomized
    │   ├── StudyEnded          ending the study of a subject whose study has already ended
    │   ├── AfterWithdrawal     data dated after the day a subject left, or a withdrawal dated
    │   │                       before data already recorded
    │   ├── FinalVisitNotDone   completing a subject before the final protocol visit is done
    │   ├── SecretKeyRequired   a sealed secret is needed but CMVTRIAL_SECRET_KEY is missing or the
    │   │                       published development key outside local use
    │   ├── SecretKeyMismatch   a secret was sealed under another CMVTRIAL_SECRET_KEY
    │   └── DatabaseNotEmpty    restoring a backup into a database that already holds tables
    ├── AuthenticationFailed    wrong user name or password           (HTTP 401, exit 1)
    │   └── TooManyAttempts     account locked or sign-ins rate-limited (HTTP 429)
    ├── DatabaseError           the database cannot serve the request (HTTP 503, exit 1)
    │   ├── DatabaseUrlInvalid
    │   ├── DatabaseUnavailable
    │   ├── DatabaseNotInitialised
    │   ├── DatabaseLocked
    │   └── BackupFailed        pg_dump / pg_restore missing or failing, or a restore that does not
    │                           reproduce the backup
    ├── ClusterUnavailable      the Dask scheduler named cannot be reached (HTTP 500, exit 1)
    └── AuditChainBroken        the audit trail fails verification    (HTTP 500, exit 1)

Adapters map the families to exit codes and HTTP statuses through ``exit_code`` and
``http_status``; anything that is not a ``CmvtrialError`` reaching a user is a bug.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CmvtrialError(Exception):
    """Base of every domain error."""

    code: ClassVar[str] = "cmvtrial_error"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """The error as plain data, for JSON output and problem+json bodies."""
        return {"code": self.code, "detail": self.message, **self.details}


class InvalidInput(CmvtrialError):
    code = "invalid_input"
    http_status = 422
    exit_code = 2


class _ListsProblems(InvalidInput):
    """Bad input found in a file, reported whole: ``problems`` lists every one with its location,
    so the author can mend them all at once instead of one per run."""

    def __init__(self, message: str, problems: list[dict[str, Any]] | None = None, **details: Any):
        super().__init__(message, **details)
        self.problems: list[dict[str, Any]] = problems or []
        self.details["problems"] = self.problems


class ProtocolInvalid(_ListsProblems):
    """A protocol file that cannot be used."""

    code = "protocol_invalid"


class ScenarioInvalid(_ListsProblems):
    """A simulation scenario file that cannot be used."""

    code = "scenario_invalid"


class UnitError(InvalidInput):
    code = "unit_error"


class OutOfRange(InvalidInput):
    code = "out_of_range"


class BackupInvalid(InvalidInput):
    """A file given to `cmvtrial restore` that is not a cmvtrial backup, or whose content does not
    match the SHA-256 in its manifest (damaged or altered): nothing is restored from it."""

    code = "backup_invalid"


class NotFound(CmvtrialError):
    code = "not_found"
    http_status = 404


class Forbidden(CmvtrialError):
    code = "forbidden"
    http_status = 403


class CsrfRejected(Forbidden):
    """A state-changing request from a browser session without the matching CSRF token: it may
    come from another site riding on the user's cookie, so it is refused (issue 10)."""

    code = "csrf_rejected"


class Refused(CmvtrialError):
    code = "refused"
    http_status = 409


class AlreadyExists(Refused):
    code = "already_exists"


class AlreadyInitialised(Refused):
    code = "already_initialised"


class NotEligible(Refused):
    code = "not_eligible"


class AlreadyRandomized(Refused):
    code = "already_randomized"


class NotConsented(Refused):
    """Randomizing a subject whose informed consent date is not recorded (ICH E6(R3) §2.8: consent
    comes before any trial-specific intervention, so before allocation)."""

    code = "not_consented"


class OutsideVisitWindow(Refused):
    code = "outside_visit_window"


class DrugNotInArm(Refused):
    """A dose of a drug the subject's arm does not receive (e.g. IL-2 in the ganciclovir-alone arm)."""

    code = "drug_not_in_arm"


class OutsideTreatmentPeriod(Refused):
    """A dose dated before the regimen starts or after end of treatment (CMV negativity)."""

    code = "outside_treatment_period"


class NotRandomized(Refused):
    """Withdrawing or completing a subject who was never randomized: before randomization a
    candidate leaves as a screen failure (services/screening.py), not by withdrawal."""

    code = "not_randomized"


class StudyEnded(Refused):
    """Withdrawing or completing a subject who already withdrew, was lost to follow-up, died or
    completed the trial: a subject's study ends once (a second submit changes nothing)."""

    code = "study_ended"


class AfterWithdrawal(Refused):
    """A visit, visit data or a dose dated after the day the subject left the trial, or a withdrawal
    dated before data already recorded for the subject (core/disposition.py)."""

    code = "after_withdrawal"


class FinalVisitNotDone(Refused):
    """Completing a subject whose final protocol visit (the follow-up after the end of treatment) is
    not done yet."""

    code = "final_visit_not_done"


class SecretKeyRequired(Refused):
    """Sealing or opening a secret (the randomization seed) without a usable CMVTRIAL_SECRET_KEY:
    none is set, or the published development key, outside local use (STYLE.md "Configuration")."""

    code = "secret_key_required"


class SecretKeyMismatch(Refused):
    """A sealed secret that the configured CMVTRIAL_SECRET_KEY cannot open: it was sealed under
    another key (or altered). The seed is never guessed or regenerated; set the original key."""

    code = "secret_key_mismatch"


class DatabaseNotEmpty(Refused):
    """`cmvtrial restore` into a database that already holds tables: a restore never overwrites."""

    code = "database_not_empty"


class AuthenticationFailed(CmvtrialError):
    code = "authentication_failed"
    http_status = 401


class TooManyAttempts(AuthenticationFailed):
    """Sign-in refused for now: the account is locked after repeated failures, or one client sent
    too many attempts; ``retry_after`` (seconds) says when to try again."""

    code = "too_many_attempts"
    http_status = 429


class DatabaseError(CmvtrialError):
    code = "database_error"
    http_status = 503


class DatabaseUrlInvalid(DatabaseError):
    code = "database_url_invalid"


class DatabaseUnavailable(DatabaseError):
    code = "database_unavailable"


class DatabaseNotInitialised(DatabaseError):
    code = "database_not_initialised"


class DatabaseLocked(DatabaseError):
    code = "database_locked"


class BackupFailed(DatabaseError):
    """A backup or restore that could not be completed: pg_dump or pg_restore missing or failing,
    or a restored database whose row counts or audit chain differ from the backup's manifest."""

    code = "backup_failed"


class ClusterUnavailable(CmvtrialError):
    """`simulate power --scheduler ADDRESS` when no Dask scheduler answers there."""

    code = "cluster_unavailable"


class AuditChainBroken(CmvtrialError):
    code = "audit_chain_broken"


def all_error_classes() -> list[type[CmvtrialError]]:
    """Every error class, base first; docs and tests use it to check that each code is documented."""
    found: list[type[CmvtrialError]] = []
    pending: list[type[CmvtrialError]] = [CmvtrialError]
    while pending:
        cls = pending.pop(0)
        if not cls.__name__.startswith("_"):
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found
