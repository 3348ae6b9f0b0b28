"""The subject lifecycle as a state machine (STYLE.md "Tests"): days pass, doses and visits are
recorded, the investigator withdraws or tries to complete, in any order. The laws:

- a subject's study ends once: after a withdrawal the status, date and reason never change again;
- nothing is dated after the day a subject left: no visit done, no dose recorded;
- a withdrawal is never dated before data already recorded, before randomization or after today;
- every refusal changes nothing, not even the audit trail.

On SQLite (each example builds its own trial database); the same services run on PostgreSQL in
test_end_of_study_service.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from conftest import ADMIN_PASSWORD, TEST_SECRET_KEY
from data_capture_support import GCV, RANDOMIZED_ON, counts, make_capture_trial
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from cmvtrial.config import Settings
from cmvtrial.core.disposition import LEFT_EARLY, WITHDRAWAL_REASONS
from cmvtrial.errors import (
    AfterWithdrawal,
    AlreadyExists,
    CmvtrialError,
    FinalVisitNotDone,
    InvalidInput,
    StudyEnded,
)
from cmvtrial.services import dosing_records, end_of_study, visits
from cmvtrial.services.accounts import actor_for
from cmvtrial.services.trial_setup import initialise_trial
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.database import open_database
from cmvtrial.store.tables import DoseAdministration, StudyEvent, Subject

NOW = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


class Lifecycle(RuleBasedStateMachine):
    def __init__(self, folder) -> None:
        super().__init__()
        url = f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}"
        self.database = open_database(url, Settings(secret_key=TEST_SECRET_KEY), create=True, require_current=False)
        initialise_trial(self.database, "sle-cmv-il2", "admin", ADMIN_PASSWORD, now=NOW)
        self.uow = UnitOfWork(self.database.session_factory, clock=lambda: NOW)
        self.trial = make_capture_trial(self.uow, actor_for(self.uow, "admin"))
        self.subject = self.trial.gcv_subject
        self.today = RANDOMIZED_ON
        self.left: tuple[str, date, str] | None = None   # (status, date, reason) once withdrawn
        self.latest: date | None = None                  # the latest visit done or dose recorded
        self.dosed: set[date] = set()
        self.visited: set[str] = set()

    def teardown(self) -> None:
        self.database.dispose()

    def refused(self, error: type[CmvtrialError], action) -> None:
        before = counts(self.uow)
        try:
            action()
        except error:
            pass
        else:  # pragma: no cover - the law is broken
            raise AssertionError(f"{error.__name__} expected")
        assert counts(self.uow) == before

    @rule(days=st.integers(min_value=0, max_value=9))
    def a_day_passes(self, days: int) -> None:
        self.today += timedelta(days=days)

    @rule()
    def a_dose_is_recorded_today(self) -> None:
        def record():
            return dosing_records.record_administration(self.uow, self.trial.coordinator, self.subject, {
                "drug": GCV, "dose": 300, "unit": "mg", "route": "intravenous", "date": self.today.isoformat(),
                "given_by": "Nurse Li"}, today=self.today)

        if self.left is not None and self.today > self.left[1]:
            self.refused(AfterWithdrawal, record)
        elif self.today in self.dosed:
            self.refused(AlreadyExists, record)
        else:
            record()
            self.dosed.add(self.today)
            self.latest = max(self.latest or self.today, self.today)

    @rule()
    def this_weeks_visit_is_done_today(self) -> None:
        week = (self.today - RANDOMIZED_ON).days // 7
        label = f"TW{week}" if week else "BL"
        if label in self.visited:
            return

        def record():
            return visits.record_visit(self.uow, self.trial.coordinator, self.subject, label, today=self.today,
                                       on_date=self.today)

        if self.left is not None and self.today > self.left[1]:
            self.refused(AfterWithdrawal, record)
        else:
            record()
            self.visited.add(label)
            self.latest = max(self.latest or self.today, self.today)

    @rule(reason=st.sampled_from([r.code for r in WITHDRAWAL_REASONS]), back=st.integers(min_value=-1, max_value=6))
    def the_investigator_withdraws(self, reason: str, back: int) -> None:
        on_date = self.today - timedelta(days=back)

        def withdraw():
            return end_of_study.withdraw_subject(self.uow, self.trial.investigator, self.subject, reason=reason,
                                                 on_date=on_date, today=self.today, details="in the subject's words")

        if self.left is not None:
            self.refused(StudyEnded, withdraw)
        elif on_date > self.today or on_date < RANDOMIZED_ON:
            self.refused(InvalidInput, withdraw)
        elif self.latest is not None and self.latest > on_date:
            self.refused(AfterWithdrawal, withdraw)
        else:
            view = withdraw()
            assert view.status in LEFT_EARLY and view.date == on_date
            self.left = (view.status, on_date, reason)

    @rule()
    def the_investigator_tries_to_complete(self) -> None:
        # Treatment never ends in this machine (no CMV-DNA is entered), so FU3M never has a date.
        error = StudyEnded if self.left is not None else FinalVisitNotDone
        self.refused(error, lambda: end_of_study.complete_subject(self.uow, self.trial.investigator, self.subject,
                                                                  today=self.today))

    @invariant()
    def the_database_agrees_and_nothing_follows_the_end(self) -> None:
        with self.uow.reading():
            row = self.uow.session.get(Subject, self.subject)
            stored = (row.status, row.end_of_study_date, row.end_of_study_reason)
            dates = [d for (d,) in self.uow.session.execute(
                select(DoseAdministration.administered_on).where(DoseAdministration.subject_id == self.subject))]
            dates += [e.actual_date for e in self.uow.session.scalars(
                select(StudyEvent).where(StudyEvent.subject_id == self.subject, StudyEvent.status == "done"))
                if e.actual_date is not None and e.visit_code != "SCR"]
        if self.left is None:
            assert stored[0] in ("randomized", "on_treatment") and stored[1:] == (None, None)
        else:
            assert stored == self.left
            assert all(day <= self.left[1] for day in dates)


def test_a_subjects_study_ends_once_and_nothing_is_dated_after_it(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lifecycle")
    run_state_machine_as_test(lambda: Lifecycle(folder), settings=settings(
        max_examples=12, stateful_step_count=12, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck)))
