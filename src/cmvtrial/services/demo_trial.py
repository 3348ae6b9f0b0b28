"""Demo data through the real system: a virtual trial entered by the same use cases a site uses.

Why through the services and not straight into the tables (issue 7): the demo must be
indistinguishable in structure from a real trial database — every value validated, normalized and
audited, queries opened by the edit checks, lab values graded into safety proposals, treatment
ended by the protocol's stop rule, visits signed — so the report, the exports, the web app and
`cmvtrial audit verify` work on it unchanged, and so a loader that gets through a whole trial is
also an end-to-end test of the services.

How: every step of the :class:`~cmvtrial.simulation.virtual_trial.VirtualTrial` becomes an action
on its simulated date, and the actions of all candidates run in date order (the audit trail then
reads like a trial's: screening, randomization in the order subjects came, visits week by week).
The clock of every unit of work is the simulated day, and ``today`` of every use case is that
day. Who does what is who would in a trial:

- the **administrator** adds the sites and staff that are missing and sets up the randomization
  scheme at go-live;
- a site's **coordinator** registers candidates, enters their screening record (the eligibility
  engine decides; screen failures get its criteria), records consent or the refusal, randomizes
  (the real service allocates; the loader then takes the simulated course of *that* arm), enters
  each visit's forms (data_entry.py: validation, queries, lab review, the stop rule) and each
  dose or hold (the ganciclovir dose calculated from weight and Cockcroft-Gault clearance, held
  when the protocol's hold rules say so), records missed visits and answers queries;
- the site's **investigator** records adverse events (clinical ones when they start; a lab one when
  a lab-safety proposal shows it, or when it ends if no visit saw it), confirms or dismisses every
  proposal, closes events when they resolve, signs each visit (re-entering the password), withdraws
  a simulated dropout on its day with its reason (withdrawn, lost to follow-up or died) and records
  the completion of a subject whose final visit (FU3M) is done (services/end_of_study.py);
- the site's **monitor** closes the answered queries.

This module sets the trial up, screens and randomizes; each randomized subject's course is entered
by :class:`~cmvtrial.services.demo_course.SubjectCourse`.

A required item the simulation has no value for is answered "not done" with its reason, as a site
does (:meth:`_Loader.as_entered`). Nothing after ``as_of`` is entered, so a trial can be loaded as it
stands on any date; the history is back-dated (its audit events carry the simulated dates). A step
a service refuses is not forced: it is listed in ``skipped`` with the service's message (a
consistency check between the simulator and the rules; the tests expect none). Not modelled: data
corrections.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select

from cmvtrial.errors import CmvtrialError, InvalidInput, Refused
from cmvtrial.services import accounts, randomizing, screening, subjects, trial_setup
from cmvtrial.services.demo_course import CLOSE_AFTER, RANDOMIZE, SCREEN, SIGN_AFTER, SubjectCourse
from cmvtrial.services.permissions import COORDINATOR, INVESTIGATOR, MONITOR, Actor
from cmvtrial.services.protocol_versions import parsed, version_in_force
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.services.visit_data import cmv_items
from cmvtrial.simulation.virtual_trial import VirtualTrial
from cmvtrial.store.tables import Subject

#: The staff the loader needs at each site; user names are ``<site>-<role>`` in lower case.
SITE_STAFF_ROLES = (COORDINATOR, INVESTIGATOR, MONITOR)
#: The working day starts at this UTC time; each clock read moves on by one second.
DAY_START = time(1, 0)
REASON = "demo data (cmvtrial simulate trial --db)"


@dataclass(frozen=True)
class DemoAccount:
    username: str
    role: str
    site_code: str | None
    password: str


@dataclass
class DemoLoad:
    """What loading did, counted as the services answered."""

    protocol: str
    scenario: str
    seed: int
    as_of: date
    sites_created: list[str] = field(default_factory=list)
    accounts: list[DemoAccount] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    arms: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def count(self, name: str, by: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + by

    def to_dict(self) -> dict[str, object]:
        return {"protocol": self.protocol, "scenario": self.scenario, "seed": self.seed, "as_of": self.as_of.isoformat(),
                "sites_created": self.sites_created,
                "accounts": [{"username": a.username, "role": a.role, "site": a.site_code, "password": a.password}
                             for a in self.accounts],
                "counts": dict(sorted(self.counts.items())), "arms": dict(sorted(self.arms.items())),
                "skipped": self.skipped}


class SimulatedClock:
    """``now`` for the units of work: the simulated day, one second later at each read."""

    def __init__(self) -> None:
        self.day: date | None = None
        self._ticks = itertools.count()

    def set_day(self, day: date) -> None:
        if day != self.day:
            self.day, self._ticks = day, itertools.count()

    def __call__(self) -> datetime:
        assert self.day is not None, "the clock is set before the first action"
        seconds = min(next(self._ticks), 80_000)  # stays within the day
        return datetime.combine(self.day, DAY_START, tzinfo=UTC) + timedelta(seconds=seconds)


def trial_subject_count(session_factory: Callable[[], Any]) -> int:
    """How many subjects the database holds (the loader only fills an empty trial)."""
    uow = UnitOfWork(session_factory)
    with uow.reading():
        return int(uow.session.scalar(select(func.count()).select_from(Subject)) or 0)


def last_day(trial: VirtualTrial) -> date:
    """The last simulated date of the trial, whichever arm each patient gets."""
    days = [date.fromisoformat(c["screening_date"]) for c in trial.candidates]
    for patient in trial.randomized:
        for course in patient["courses"].values():
            days += [date.fromisoformat(v["date"]) for v in course["visits"]]
            days += [date.fromisoformat(e["end_date"]) for e in course["adverse_events"]]
            days += [date.fromisoformat(d["date"]) for d in course["doses"]]
    return max(days) + SIGN_AFTER + CLOSE_AFTER


def load_virtual_trial(
    session_factory: Callable[[], Any],
    admin: Actor,
    trial: VirtualTrial,
    *,
    as_of: date,
    progress: Callable[[int, int], None] | None = None,
    make_password: Callable[[], str] = lambda: secrets.token_urlsafe(12),
    sign: bool = True,
) -> DemoLoad:
    """Enter ``trial`` into an initialised, empty trial database, everything dated up to ``as_of``.

    ``admin`` adds the missing sites and staff (their fresh passwords come back in the result, to
    print once). ``progress(done, total)`` is told as each candidate's last step is entered.
    ``sign=False`` leaves the visits unsigned (each signature re-checks the investigator's password
    with the production Argon2 cost, which is most of the time a load takes).
    Refused when the database runs another protocol or already holds subjects; nothing is written then.
    """
    clock = SimulatedClock()
    loader = _Loader(UnitOfWork(session_factory, clock=clock), clock, admin, trial, as_of, progress, make_password,
                     sign)
    loader.check()
    loader.run()
    return loader.result


class _Loader:
    def __init__(self, uow: UnitOfWork, clock: SimulatedClock, admin: Actor, trial: VirtualTrial, as_of: date,
                 progress: Callable[[int, int], None] | None, make_password: Callable[[], str], sign: bool) -> None:
        self.uow, self.clock, self.admin, self.trial, self.as_of = uow, clock, admin, trial, as_of
        self.progress, self.make_password, self.sign = progress, make_password, sign
        self.result = DemoLoad(trial.protocol, trial.scenario, trial.seed, as_of)
        self.staff: dict[tuple[str, str], Actor] = {}
        self.passwords: dict[str, str] = {}
        self.queue: list[tuple[date, int, int, Callable[[], None]]] = []
        self.order = itertools.count()
        self.pending: dict[str, int] = {}  # candidate id -> actions still queued
        self.done = 0
        self.total = 0

    # -- set-up ------------------------------------------------------------------------------------
    def check(self) -> None:
        with self.uow.reading():
            version = version_in_force(self.uow)
            self.protocol = parsed(version)
            held = self.uow.session.scalar(select(func.count()).select_from(Subject)) or 0
        if self.protocol.id != self.trial.protocol:
            raise Refused(f"the database runs protocol {self.protocol.id}; the virtual trial is of {self.trial.protocol}",
                          field="protocol", value=self.trial.protocol)
        if held:
            raise Refused(f"the database already holds {held} subject(s); demo data go into an empty trial only",
                          field="db", subjects=held)
        if self.trial.start_date > self.as_of:
            raise InvalidInput(f"the virtual trial starts on {self.trial.start_date}, after {self.as_of}",
                               field="start_date", value=self.trial.start_date.isoformat())

    def _setup(self) -> None:
        """Sites, staff and the randomization scheme, as the administrator does at go-live."""
        self.clock.set_day(self.trial.start_date)
        with self.uow.reading():
            existing = {site.code for site in self.uow.sites.list()}
            users = {user.username: user for user in self.uow.users.list()}
        for site in self.trial.sites:
            if site["code"] not in existing:
                trial_setup.add_site(self.uow, self.admin, site["code"], site["name"], reason=REASON)
                self.result.sites_created.append(site["code"])
            for role in SITE_STAFF_ROLES:
                username = f"{site['code']}-{role}".lower()
                if username not in users:
                    password = self.make_password()
                    accounts.add_user(self.uow, self.admin, username, password, role, site["code"], reason=REASON)
                    self.passwords[username] = password
                    self.result.accounts.append(DemoAccount(username, role, site["code"], password))
                self.staff[(site["code"], role)] = accounts.actor_for(self.uow, username)
        randomizing.setup_scheme(self.uow, self.admin, reason=f"go-live of the demo trial ({REASON})")

    # -- the queue ---------------------------------------------------------------------------------
    def at(self, day: date, kind: int, candidate: str, action: Callable[[], None]) -> None:
        if day > self.as_of:
            return
        self.pending[candidate] = self.pending.get(candidate, 0) + 1

        def step() -> None:
            try:
                action()
            finally:
                self.pending[candidate] -= 1
                if not self.pending[candidate]:
                    self.done += 1
                    if self.progress is not None:
                        self.progress(self.done, self.total)

        heapq.heappush(self.queue, (day, kind, next(self.order), step))

    def run(self) -> None:
        self._setup()
        candidates = [c for c in self.trial.candidates if date.fromisoformat(c["screening_date"]) <= self.as_of]
        self.total = len(candidates)
        for candidate in candidates:
            self.at(date.fromisoformat(candidate["screening_date"]), SCREEN, candidate["id"],
                    lambda c=candidate: self.screen(c))
        while self.queue:
            day, _kind, _order, step = heapq.heappop(self.queue)
            self.clock.set_day(day)
            step()

    def as_entered(self, forms: dict[str, Any]) -> dict[str, Any]:
        """The simulated forms as a site fills them in: a required item the simulation has no value
        for is answered "not done" with the reason (a CMV-DNA result that is not quantified has no
        load; a corticosteroid taken since before screening has no known start date), and counted."""
        cmv = cmv_items(self.protocol)
        filled: dict[str, Any] = {}
        for form_id, values in forms.items():
            required = [item for item in self.protocol.form(form_id).items if item.required and item.type != "group"]
            entries = values if isinstance(values, list) else [values]
            done = []
            for entry in entries:
                entry = dict(entry)
                for item in required:
                    if item.id in entry:
                        continue
                    reason = "not known to the site"
                    if cmv is not None and (form_id, item.id) == (cmv.form, cmv.load) and cmv.category in entry:
                        codelist = self.protocol.codelist(self.protocol.form(form_id).item_paths()[cmv.category].codelist or "")
                        label = next((e.label for e in codelist.items if e.code == entry[cmv.category]), entry[cmv.category])
                        reason = f"not quantified: {label}"
                    entry[item.id] = {"missing_reason": reason}
                    self.result.count("values_not_done")
                done.append(entry)
            filled[form_id] = done if isinstance(values, list) else done[0]
        return filled

    def attempt(self, what: str, action: Callable[[], Any]) -> Any:
        """Run one use case; a refusal is listed, not forced (see the module docstring)."""
        try:
            return action()
        except CmvtrialError as error:
            self.result.skipped.append(f"{self.clock.day}: {what}: {error.message}")
            return None

    # -- screening and randomization -------------------------------------------------------------
    def screen(self, candidate: dict[str, Any]) -> None:
        coordinator, name = self.staff[(candidate["site"], COORDINATOR)], candidate["id"]
        view = subjects.register_subject(self.uow, coordinator, candidate["site"], name, reason=REASON)
        self.result.count("screened")
        entry = self.attempt(f"{name} screening", lambda: screening.enter_screening_data(
            self.uow, coordinator, view.id, candidate["screening_record"]))
        if entry is None:
            return
        if entry.eligibility.eligible is not candidate["eligible"]:
            self.result.skipped.append(f"{candidate['id']}: the eligibility engine says {entry.eligibility.eligible}, "
                                       f"the simulation {candidate['eligible']}")
        if entry.eligibility.eligible is False:
            self.result.count("not_eligible")
            return
        if not candidate["consented"]:
            screening.record_screen_failure(self.uow, coordinator, view.id, "declined",
                                            "the candidate declined to take part")
            self.result.count("declined_consent")
            return
        screening.record_consent(self.uow, coordinator, view.id, date.fromisoformat(candidate["consent_date"]))
        if candidate["randomized"]:
            self.at(date.fromisoformat(candidate["randomization_date"]), RANDOMIZE, candidate["id"],
                    lambda: self.randomize(candidate, view.id))

    def randomize(self, candidate: dict[str, Any], subject_id: int) -> None:
        coordinator = self.staff[(candidate["site"], COORDINATOR)]
        allocation = self.attempt(f"{candidate['id']} randomization", lambda: randomizing.randomize_subject(
            self.uow, coordinator, subject_id))
        if allocation is None:
            return
        self.result.arms[allocation.arm] = self.result.arms.get(allocation.arm, 0) + 1
        self.result.count("randomized")
        SubjectCourse(self, candidate, subject_id, allocation.arm).schedule()
