"""Electronic signatures of a visit: re-authentication, meaning and time, the hash of the signed data,
and invalidation when signed data change (in the application, or behind its back)."""

from __future__ import annotations

from datetime import date

import pytest
from data_capture_support import HEMATOLOGY, PASSWORD, RANDOMIZED_ON, cmv, counts, make_capture_trial
from sqlalchemy import select, text

from cmvtrial.errors import AuthenticationFailed, Forbidden, InvalidInput, NotFound, Refused
from cmvtrial.services import data_entry, signatures
from cmvtrial.services.audit_verification import verify_audit
from cmvtrial.store.tables import AuditEvent, ItemValue

TODAY = date(2025, 3, 14)


@pytest.fixture
def trial(uow, admin):
    trial = make_capture_trial(uow, admin)
    for subject, actor in ((trial.il2_subject, trial.coordinator), (trial.other_subject, trial.other_coordinator)):
        data_entry.enter_visit_data(uow, actor, subject, "BL", {"hematology": HEMATOLOGY, "cmv_load": cmv(RANDOMIZED_ON)},
                                    today=TODAY, visit_date=RANDOMIZED_ON, complete=True)
    return trial


def sign(trial, actor=None, subject=None, password=PASSWORD, visit="BL", **options):
    return signatures.sign_visit(trial.uow, actor or trial.investigator, subject or trial.il2_subject, visit,
                                 password=password, **options)


def test_signing_keeps_who_when_what_it_means_and_the_hash_of_the_data(trial, now):
    view = sign(trial, meaning="review")
    assert (view.visit, view.signed_by, view.meaning, view.signed_at, view.valid) == ("BL", "inv", "review", now, True)
    assert len(view.record_sha256) == 64 and view.record_sha256 == view.current_sha256
    assert view.manifestation == "Signed by inv (inv) on 2025-03-14 09:26:53 UTC: review"
    with trial.uow.reading():
        event = trial.uow.session.scalars(select(AuditEvent).order_by(AuditEvent.sequence.desc())).first()
        assert (event.action, event.reason) == ("signature.sign", signatures.MEANINGS["review"])
    listed, = signatures.visit_signatures(trial.uow, trial.monitor, trial.il2_subject, "BL")
    assert listed.valid and listed.id == view.id


def test_a_wrong_password_signs_nothing_and_the_attempt_is_audited(trial):
    before = counts(trial.uow)
    with pytest.raises(AuthenticationFailed, match="not signed"):
        sign(trial, password="not-my-password")
    after = counts(trial.uow)
    assert after["signatures"] == before["signatures"] and after["audit_events"] == before["audit_events"] + 1
    with trial.uow.reading():
        event = trial.uow.session.scalars(select(AuditEvent).order_by(AuditEvent.sequence.desc())).first()
        assert (event.action, event.username, event.reason) == ("signature.refused", "inv", "wrong password at signing")
    assert verify_audit(trial.uow, trial.admin).ok


def test_signing_unchanged_data_again_is_refused(trial):
    sign(trial)
    before = counts(trial.uow)
    with pytest.raises(Refused, match="already signed"):
        sign(trial)
    assert counts(trial.uow) == before


def test_changing_signed_data_invalidates_the_signature_and_says_so(trial):
    first = sign(trial)
    entry = data_entry.enter_visit_data(trial.uow, trial.coordinator, trial.il2_subject, "BL",
                                        {"hematology": {"platelets": 205}}, today=TODAY, reason="re-read the report")
    message, = entry.signatures_invalidated
    assert message.startswith("the signature of BL by inv (approval") and "hematology.platelets" in message
    old, = signatures.visit_signatures(trial.uow, trial.investigator, trial.il2_subject, "BL")
    assert not old.valid and "data changed after signing: hematology.platelets" in old.invalidated_reason
    assert old.record_sha256 != old.current_sha256
    second = sign(trial)
    assert second.valid and second.id != first.id
    views = signatures.visit_signatures(trial.uow, trial.investigator, trial.il2_subject, "BL")
    assert [view.valid for view in views] == [False, True]
    with trial.uow.reading():
        actions = [e.action for e in trial.uow.audit_events.for_entity("signature", str(first.id))]
    assert actions == ["signature.sign", "signature.invalidate"]


def test_a_change_behind_the_applications_back_shows_as_invalid(trial):
    sign(trial)
    with trial.uow:
        row = trial.uow.session.scalar(select(ItemValue).where(ItemValue.item_id == "wbc",
                                                               ItemValue.subject_id == trial.il2_subject))
        trial.uow.session.execute(text("UPDATE form_data SET entered_value = '9.9' WHERE id = :id"), {"id": row.id})
        trial.uow.commit()
    view, = signatures.visit_signatures(trial.uow, trial.investigator, trial.il2_subject, "BL")
    assert not view.valid and "changed outside cmvtrial" in view.invalidated_reason


def test_only_complete_visits_with_data_are_signed(trial):
    data_entry.enter_visit_data(trial.uow, trial.coordinator, trial.il2_subject, "TW1", {"vitals": {"weight_kg": 60}},
                                today=TODAY, visit_date=date(2025, 3, 10))
    before = counts(trial.uow)
    with pytest.raises(Refused, match="vitals are not complete"):
        sign(trial, visit="TW1")
    with pytest.raises(NotFound, match="nothing recorded at TW2"):
        sign(trial, visit="TW2")
    with pytest.raises(Refused, match="not randomized"):
        sign(trial, subject=trial.screening_subject)
    assert counts(trial.uow) == before


@pytest.mark.parametrize(("options", "message"), [({"meaning": "agreement"}, "meaning must be"),
                                                  ({"password": ""}, "needs your password")])
def test_bad_input_is_refused(trial, options, message):
    before = counts(trial.uow)
    with pytest.raises(InvalidInput, match=message):
        sign(trial, **options)
    assert counts(trial.uow) == before


@pytest.mark.parametrize("role", ["admin", "investigator", "coordinator", "monitor", "data-manager", "statistician"])
def test_only_an_investigator_signs(trial, role):
    actor = trial.actors()[role]
    before = counts(trial.uow)
    if role == "investigator":
        assert sign(trial, actor=actor).valid
        return
    with pytest.raises(Forbidden):
        sign(trial, actor=actor)
    assert counts(trial.uow) == before


def test_an_investigator_of_another_site_cannot_sign(trial):
    before = counts(trial.uow)
    with pytest.raises(Forbidden, match="another site"):
        sign(trial, actor=trial.other_investigator)
    assert counts(trial.uow) == before
    assert sign(trial, actor=trial.other_investigator, subject=trial.other_subject).valid
