"""Secrets sealed at rest under the operator's key (CMVTRIAL_SECRET_KEY): the randomization seed.

Why: whoever holds the seed can compute every future allocation (reference/standards.md RZ-01,
RZ-02), and a database is copied more often than one thinks — backups, a test restore, a support
dump. So the seed is stored only sealed with AES-256-GCM under a key that lives in the server's
environment, never in the database or its backups (issue 10; 21 CFR 11.10(c),(d)). A copy of the
database alone reveals no list.

- **One key, several purposes.** The setting is stretched by HKDF-SHA256 with a purpose label
  (``randomization-seed``, ``subject-pseudonym`` …), so the key that seals the seed is never the
  key that makes pseudonyms (services/pseudonyms.py).
- **Bound to its row.** The associated data names what the secret belongs to (the scheme's
  protocol version), so a sealed seed copied onto another scheme does not open.
- **A wrong key says so.** The sealed text carries a key id (an HMAC of the derived key, which
  reveals nothing about it); opening under another key is ``SecretKeyMismatch`` naming both ids,
  not a vague "corrupt".
- **Local use only for the default.** STYLE.md: a default secret is refused outside local use.
  Without a key (or with the published ``DEVELOPMENT_SECRET_KEY``) sealing works on an SQLite
  database — the demo and a single workstation — and is refused with ``SecretKeyRequired`` on
  PostgreSQL, the shared production database, and by `cmvtrial serve` on a non-loopback address.

The key reaches services with the database it protects: ``open_database(url, settings)`` puts it in
the session factory's ``info`` (store/database.py), so no service reads the environment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cmvtrial.errors import SecretKeyMismatch, SecretKeyRequired
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.database import SECRET_KEY_INFO

#: The key used when none is configured. It is published here, so it protects nothing: accepted
#: only for local use (see the module docstring).
DEVELOPMENT_SECRET_KEY = "cmvtrial-development-key-for-local-use-only"
#: Database backends that count as local use (an embedded file on one machine).
LOCAL_BACKENDS = frozenset({"sqlite"})
#: Purposes a derived key serves; each gets its own key.
SEED_PURPOSE = "randomization-seed"
#: Format marker of sealed text: version, key id, then nonce + ciphertext + tag in base64url.
SEALED_PREFIX = "v1"
_NONCE_BYTES = 12
_SALT = b"cmvtrial-sealing-v1"


@dataclass(frozen=True, slots=True)
class SecretKey:
    """The operator's key (``development`` when it is the published default)."""

    material: bytes
    development: bool

    def derive(self, purpose: str) -> bytes:
        """A 256-bit key for one purpose (HKDF-SHA256, RFC 5869)."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose.encode("utf-8")).derive(
            self.material
        )

    def key_id(self, purpose: str) -> str:
        """A short public name of the derived key, stored with what it seals."""
        return hmac.new(self.derive(purpose), b"cmvtrial-key-id", hashlib.sha256).hexdigest()[:12]

    def __repr__(self) -> str:  # never print the material
        return f"SecretKey(development={self.development})"


def resolve_key(configured: str | None, *, local: bool) -> SecretKey:
    """The key to seal with: the configured one, or the development key for local use only."""
    if configured is None or configured == DEVELOPMENT_SECRET_KEY:
        if not local:
            what = "is not set" if configured is None else "is the published development key"
            raise SecretKeyRequired(
                f"CMVTRIAL_SECRET_KEY {what}; outside local use (PostgreSQL, or serving beyond loopback) "
                "the randomization seed must be sealed under your own key: set CMVTRIAL_SECRET_KEY to a "
                "random token of at least 32 characters and keep it outside the database",
                setting="CMVTRIAL_SECRET_KEY",
            )
        return SecretKey(DEVELOPMENT_SECRET_KEY.encode("utf-8"), development=True)
    return SecretKey(configured.encode("utf-8"), development=False)


def key_for(uow: UnitOfWork) -> SecretKey:
    """The key of the database ``uow`` works on (call inside ``with uow``)."""
    session = uow.session
    local = session.get_bind().dialect.name in LOCAL_BACKENDS
    return resolve_key(session.info.get(SECRET_KEY_INFO), local=local)


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_key_for_listening(configured: str | None, host: str) -> None:
    """`cmvtrial serve` beyond loopback is not local use: refuse it without the operator's own key."""
    resolve_key(configured, local=is_loopback(host))


def seal(key: SecretKey, purpose: str, plaintext: str, *, context: str) -> str:
    """``plaintext`` sealed with AES-256-GCM for ``purpose``; ``context`` is the associated data."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key.derive(purpose)).encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
    body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
    return f"{SEALED_PREFIX}.{key.key_id(purpose)}.{body}"


def unseal(key: SecretKey, purpose: str, sealed: str, *, context: str) -> str:
    """The plaintext of ``seal``'s output; SecretKeyMismatch if another key (or tampering) sealed it."""
    version, _, rest = sealed.partition(".")
    key_id, _, body = rest.partition(".")
    if version != SEALED_PREFIX or not key_id or not body:
        raise SecretKeyMismatch(
            "the stored secret is not in sealed form (written outside cmvtrial?); it cannot be opened",
            entity=context,
        )
    expected = key.key_id(purpose)
    if not hmac.compare_digest(key_id, expected):
        raise SecretKeyMismatch(
            f"the stored secret was sealed under another CMVTRIAL_SECRET_KEY (key id {key_id}; the "
            f"configured key is {expected}); set the key it was sealed with",
            entity=context, sealed_key_id=key_id, configured_key_id=expected,
        )
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        plain = AESGCM(key.derive(purpose)).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode("utf-8"))
    except (InvalidTag, ValueError, binascii.Error):
        raise SecretKeyMismatch(
            "the stored secret does not open under the configured key: it was altered or belongs elsewhere",
            entity=context,
        ) from None
    return plain.decode("utf-8")


def seed_context(protocol_version_id: int) -> str:
    """Associated data of a scheme's seed: it opens only on the scheme of that protocol version."""
    return f"randomization_scheme/protocol_version={protocol_version_id}"


def seal_seed(uow: UnitOfWork, seed: str, protocol_version_id: int) -> str:
    return seal(key_for(uow), SEED_PURPOSE, seed, context=seed_context(protocol_version_id))


def open_seed(uow: UnitOfWork, sealed_seed: str, protocol_version_id: int) -> str:
    return unseal(key_for(uow), SEED_PURPOSE, sealed_seed, context=seed_context(protocol_version_id))
