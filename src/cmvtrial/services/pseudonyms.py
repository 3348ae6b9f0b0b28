"""Subject pseudonyms for exports: a keyed HMAC, stable under one key, meaningless without it.

Why: an export (SDTM, ADaM, ODM, FHIR) leaves the trial's control, so it names a subject neither by
screening number nor by subject number — both are printed on site documents and could be linked
back to a person. It names them by ``HMAC-SHA256(key, "site:screening number")``, cut to
:data:`PSEUDONYM_LENGTH` hexadecimal characters: the same subject gets the same pseudonym in every
dataset and every export made under the same CMVTRIAL_SECRET_KEY (so USUBJID joins across SDTM,
ADaM and later exports), and nobody without the key can compute or reverse it (ICH E6(R3) §4.2.1
confidentiality; GDPR Art. 4(5) "pseudonymisation").

The key is the operator's CMVTRIAL_SECRET_KEY, stretched for this purpose only (HKDF with the
purpose label ``subject-pseudonym``, services/sealing.py), so it is never the key that seals the
randomization seed. Without a configured key the published development key is used for local
(SQLite) use only, exactly as sealing does; PostgreSQL refuses it with SecretKeyRequired.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from cmvtrial.services.sealing import key_for
from cmvtrial.services.unit_of_work import UnitOfWork

PSEUDONYM_PURPOSE = "subject-pseudonym"
#: Hex characters kept: 40 bits, collision-free in practice for a trial's few thousand subjects and
#: short enough for SDTM SUBJID and XPORT's 200-character values.
PSEUDONYM_LENGTH = 10


def pseudonym(key: bytes, site_code: str, screening_number: str) -> str:
    """The pseudonym of one subject under a derived key (upper-case hex, ``P`` + 10 characters)."""
    message = f"{site_code}:{screening_number}".encode()
    return "P" + hmac.new(key, message, hashlib.sha256).hexdigest()[:PSEUDONYM_LENGTH].upper()


def pseudonymizer(uow: UnitOfWork) -> Callable[[str, str], str]:
    """``name(site_code, screening_number) -> pseudonym`` under the key of ``uow``'s database
    (call inside ``with uow``)."""
    derived = key_for(uow).derive(PSEUDONYM_PURPOSE)
    return lambda site_code, screening_number: pseudonym(derived, site_code, screening_number)
