"""Electronic signatures: an investigator signs a visit's data, and a later change voids the signature.

What 21 CFR Part 11 asks of a signature (reference/standards.md P11-13/P11-14; §11.50, §11.70,
§11.200) and how it is met here:

- **Re-authentication.** Signing asks for the signer's password again, even in a signed-in
  session; a wrong password signs nothing, and the failed attempt is itself audited (§11.300(d):
  attempts at unauthorized use are recorded).
- **Manifestation.** The signature keeps who signed (name), when (UTC) and what it means
  (``approval``, ``review``, ``responsibility`` or ``authorship``); the view prints all three.
- **Linking.** The signature stores the SHA-256 of the signed record: the visit (subject, visit,
  date) and every value of every form under it, as canonical JSON. Signing the same bytes again
  is refused (already signed); any change makes the hash differ.
- **Invalidation.** The data-entry service calls ``invalidate_visit_signatures`` whenever it changes
  a signed visit, in the same transaction: the signature is marked invalid with what changed, the
  change and the invalidation are both audited, and the user is told. A change made behind the
  application's back is caught too: ``visit_signatures`` recomputes the hash and reports a
  mismatch.

Only an investigator of the subject's site signs, and only a visit whose forms are all complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from cmvtrial.core.audit_chain import canonical_json
from cmvtrial.core.schedule import parse_visit_label
from cmvtrial.errors import AuthenticationFailed, InvalidInput, NotFound, Refused
from cmvtrial.services import permissions, visits
from cmvtrial.services.audit import snapshot
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.services.visits import TreatmentContext
from cmvtrial.store.tables import FormInstance, ItemValue, Signature, StudyEvent, User

#: What a signature means (21 CFR 11.50(a)(3)); an investigator signing a visit approves its data.
MEANINGS: dict[str, str] = {
    "approval": "I approve the data of this visit as accurate and complete.",
    "review": "I have reviewed the data of this visit.",
    "responsibility": "I take responsibility for the data of this visit.",
    "authorship": "I am the author of the data of this visit.",
}
DEFAULT_MEANING = "approval"


@dataclass(frozen=True)
class SignatureView:
    id: int
    subject_id: int
    subject: str
    visit: str
    meaning: str
    statement: str
    signed_by: str
    signer_name: str
    signed_at: datetime
    record_sha256: str
    current_sha256: str
    valid: bool
    invalidated_at: datetime | None
    invalidated_reason: str | None

    @property
    def manifestation(self) -> str:
        """The signature as printed (§11.50): name, date and time, meaning."""
        return f"Signed by {self.signer_name} ({self.signed_by}) on {self.signed_at:%Y-%m-%d %H:%M:%S} UTC: {self.meaning}"

    def to_dict(self) -> dict[str, object]:
        from cmvtrial.core.audit_chain import to_jsonable

        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["manifestation"] = self.manifestation
        return dict(to_jsonable(data))


# ------------------------------------------------------------------------------------------------
# The signed record


def visit_record(uow: UnitOfWork, event: StudyEvent) -> dict[str, Any]:
    """The data a visit signature covers, as plain data in a stable order."""
    forms = []
    instances = uow.session.scalars(select(FormInstance).where(FormInstance.study_event_id == event.id)
                                    .order_by(FormInstance.form_id, FormInstance.form_repeat))
    for instance in instances:
        rows = uow.session.scalars(select(ItemValue).where(ItemValue.form_instance_id == instance.id)
                                   .order_by(ItemValue.item_id, ItemValue.item_group_repeat))
        forms.append({
            "form": instance.form_id, "repeat": instance.form_repeat, "status": instance.status,
            "items": [{name: getattr(row, name) for name in (
                "item_id", "item_group_repeat", "value_type", "entered_value", "entered_unit", "normalized_number",
                "normalized_text", "normalized_unit", "missing_reason", "version")} for row in rows],
        })
    return {"subject_id": event.subject_id, "visit": event.visit_code, "repeat": event.repeat_index,
            "actual_date": event.actual_date, "forms": forms}


def visit_digest(uow: UnitOfWork, event: StudyEvent) -> str:
    return hashlib.sha256(canonical_json(visit_record(uow, event)).encode("utf-8")).hexdigest()


_VALID_SIGNATURES = (select(Signature).where(Signature.study_event_id == bindparam("event"),
                                             Signature.invalidated_at.is_(None)).order_by(Signature.id))


def valid_signatures(uow: UnitOfWork, event: StudyEvent) -> list[Signature]:
    """The signatures of ``event`` not voided yet."""
    return list(uow.session.scalars(_VALID_SIGNATURES, {"event": event.id}))


def invalidate_visit_signatures(uow: UnitOfWork, actor: Actor, ctx: TreatmentContext, event: StudyEvent, *,
                                what: str, valid: Sequence[Signature] | None = None) -> list[str]:
    """Void every valid signature of ``event`` because ``what`` changed (inside the caller's
    transaction); one sentence per voided signature, to show the user. ``valid`` are the event's
    valid signatures when the caller read them already (under the subject's lock, or before it
    with the subject's ``row_version`` checked since)."""
    messages = []
    for signature in valid_signatures(uow, event) if valid is None else valid:
        before = snapshot(signature)
        signature.invalidated_at = uow.clock()
        signature.invalidated_reason = f"data changed after signing: {what}"[:2000]
        uow.session.flush()
        uow.audit.record(actor, "signature.invalidate", signature, before=before, after=signature,
                         reason=signature.invalidated_reason, site_id=ctx.subject.site_id)
        signer = uow.session.get(User, signature.signed_by_user_id)
        messages.append(f"the signature of {visits.visit_label(event.visit_code, event.repeat_index)} by "
                        f"{signer.username if signer else signature.signed_by_user_id} "
                        f"({signature.meaning}, {signature.signed_at:%Y-%m-%d %H:%M} UTC) is no longer valid: "
                        f"{signature.invalidated_reason}")
    return messages


# ------------------------------------------------------------------------------------------------
# Use cases


def _visit_event(uow: UnitOfWork, ctx: TreatmentContext, visit: str) -> StudyEvent:
    key = parse_visit_label(ctx.protocol, visit)
    event = visits.stored_events(uow, ctx.subject.id).get(key)
    if event is None:
        raise NotFound(f"subject {ctx.label} has nothing recorded at {visits.visit_label(*key)}", field="visit",
                       value=visit)
    return event


def sign_visit(uow: UnitOfWork, actor: Actor, subject_id: int, visit: str, *, password: str,
               meaning: str = DEFAULT_MEANING) -> SignatureView:
    """The investigator signs every form of one visit, after giving their password again."""
    permissions.require(actor, "form.sign")
    if meaning not in MEANINGS:
        raise InvalidInput(f"meaning must be one of {', '.join(MEANINGS)} (got {meaning!r})", field="meaning",
                           value=meaning)
    if not isinstance(password, str) or not password:
        raise InvalidInput("signing needs your password", field="password")
    with uow:
        subject = visits.subject_in_scope(uow, actor, "form.sign", subject_id, lock=True)
        ctx = visits.treatment_context(uow, subject)
        event = _visit_event(uow, ctx, visit)
        label = visits.visit_label(event.visit_code, event.repeat_index)
        instances = list(uow.session.scalars(select(FormInstance).where(FormInstance.study_event_id == event.id)))
        if not instances:
            raise Refused(f"{label} of subject {ctx.label} has no data to sign", field="visit", value=label)
        unfinished = sorted(f"{i.form_id}" + (f"[{i.form_repeat}]" if i.form_repeat else "")
                            for i in instances if i.status != "complete")
        if unfinished:
            raise Refused(f"{label} cannot be signed while form(s) {', '.join(unfinished)} are not complete",
                          field="visit", value=label)
        _reauthenticate(uow, actor, ctx, label, password)
        digest = visit_digest(uow, event)
        for earlier in valid_signatures(uow, event):
            if earlier.record_sha256 == digest:
                raise Refused(f"{label} of subject {ctx.label} is already signed ({earlier.meaning}, "
                              f"{earlier.signed_at:%Y-%m-%d %H:%M} UTC) and has not changed since",
                              field="visit", value=label)
        invalidate_visit_signatures(uow, actor, ctx, event, what="the data differ from what was signed")
        signature = Signature(subject_id=subject.id, study_event_id=event.id, form_instance_id=None, meaning=meaning,
                              record_sha256=digest, signed_at=uow.clock(), signed_by_user_id=actor.user_id)
        uow.session.add(signature)
        uow.session.flush()
        uow.audit.record(actor, "signature.sign", signature, after=signature, reason=MEANINGS[meaning],
                         site_id=subject.site_id)
        view = _view(uow, ctx, signature, digest)
        uow.commit()
    return view


def _reauthenticate(uow: UnitOfWork, actor: Actor, ctx: TreatmentContext, label: str, password: str) -> None:
    from cmvtrial.services.accounts import verify_password

    user = uow.session.get(User, actor.user_id)
    if user is not None and user.active and verify_password(user.password_hash, password):
        return
    # Nothing has been written yet in this transaction: the record of the attempt is all it commits.
    uow.audit.record(actor, "signature.refused", ("study_event", f"{ctx.subject.id}/{label}"),
                     reason="wrong password at signing", site_id=ctx.subject.site_id)
    uow.commit()
    raise AuthenticationFailed("wrong password: the visit was not signed")


def visit_signatures(uow: UnitOfWork, actor: Actor, subject_id: int, visit: str) -> list[SignatureView]:
    """Every signature of a visit, each with whether it still matches the data (recomputed now)."""
    with uow.reading():
        subject = visits.subject_in_scope(uow, actor, "subject.view", subject_id)
        ctx = visits.treatment_context(uow, subject)
        event = _visit_event(uow, ctx, visit)
        digest = visit_digest(uow, event)
        rows = uow.session.scalars(select(Signature).where(Signature.study_event_id == event.id).order_by(Signature.id))
        return [_view(uow, ctx, row, digest) for row in rows]


def _view(uow: UnitOfWork, ctx: TreatmentContext, signature: Signature, digest: str) -> SignatureView:
    signer = uow.session.get(User, signature.signed_by_user_id)
    event = uow.session.get(StudyEvent, signature.study_event_id) if signature.study_event_id else None
    label = visits.visit_label(event.visit_code, event.repeat_index) if event else "-"
    valid = signature.invalidated_at is None and signature.record_sha256 == digest
    reason = signature.invalidated_reason
    if signature.invalidated_at is None and not valid:
        reason = "the visit's data no longer match the signed record (changed outside cmvtrial)"
    username = signer.username if signer else str(signature.signed_by_user_id)
    return SignatureView(signature.id, ctx.subject.id, ctx.label, label, signature.meaning,
                         MEANINGS.get(signature.meaning, signature.meaning), username,
                         (signer.full_name or username) if signer else username, signature.signed_at,
                         signature.record_sha256, digest, valid, signature.invalidated_at, reason)
