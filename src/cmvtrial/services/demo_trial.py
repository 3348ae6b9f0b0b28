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
  proposal, closes events when they resolve, and signs each visit (re-entering the password);
- the site's **monitor** closes the answered queries.

A required item the simulation has no value for is answered "not done" with its reason, as a site
does (:meth:`_Loader.as_entered`). Nothing after ``as_of`` is entered, so a trial can be loaded as it
stands on any date; the history is back-dated (its audit events carry the simulated dates). A step
a service refuses is not forced: it is listed in ``skipped`` with the service's message (a
consistency check between the simulator and the rules; the tests expect none). Not modelled: a
dropout stays on treatment in the database (there is no withdrawal use case yet), and data
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

from cmvtrial.core.dosing import judge_holds, weight_based_dose
from cmvtrial.core.eligibility import expression_values
from cmvtrial.errors import CmvtrialError, InvalidInput, Refused
from cmvtrial.services import (
    accounts,
    adverse_events,
    data_entry,
    dosing_records,
    lab_safety,
    queries,
    randomizing,
    screening,
    signatures,
    subjects,
    trial_setup,
    visits,
)
from cmvtrial.services.permissions import COORDINATOR, INVESTIGATOR, MONITOR, Actor
from cmvtrial.services.protocol_versions import parsed, version_in_force
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.services.visit_data import cmv_items
from cmvtrial.simulation.virtual_trial import VirtualTrial
from cmvtrial.store.tables import Subject

#: The staff the loader needs at each site; user names are ``<site>-<role>`` in lower case.
SITE_STAFF_ROLES = (COORDINATOR, INVESTIGATOR, MONITOR)
#: Days after a visit that its queries are answered, closed, and the visit signed (work habits of a
#: site, not trial rules).
ANSWER_AFTER, CLOSE_AFTER, SIGN_AFTER = timedelta(days=2), timedelta(days=5), timedelta(days=3)
#: A lab-safety proposal is matched to a simulated event observed up to this long before or after it.
MATCH_SLACK = timedelta(days=3)
#: The working day starts at this UTC time; each clock read moves on by one second.
DAY_START = time(1, 0)
REASON = "demo data (cmvtrial simulate trial --db)"

# Order of the actions of one day: the visit's samples come before the day's dose and the safety work.
SCREEN, RANDOMIZE, VISIT, DOSE, AE_START, AE_END, ANSWER, CLOSE, SIGN = range(9)


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
        _Subject(self, candidate, subject_id, allocation.arm).schedule()


class _Subject:
    """One randomized subject's course, entered step by step."""

    def __init__(self, loader: _Loader, candidate: dict[str, Any], subject_id: int, arm: str) -> None:
        self.loader, self.candidate, self.id, self.arm = loader, candidate, subject_id, arm
        self.course = candidate["courses"][arm]
        site = candidate["site"]
        self.coordinator = loader.staff[(site, COORDINATOR)]
        self.investigator = loader.staff[(site, INVESTIGATOR)]
        self.monitor = loader.staff[(site, MONITOR)]
        self.protocol = loader.protocol
        record = candidate["screening_record"]
        values = expression_values(self.protocol, record)[0]
        self.weight_kg = float(record["weight_kg"])
        self.crcl = values.get("creatinine_clearance_ml_min")
        self.labs: dict[str, float] = {}      # the latest hematology entered (hold rules read it)
        self.end_of_treatment: date | None = None
        self.entered: set[tuple[str, int]] = set()
        self.events: dict[int, int] = {}       # index of a simulated AE -> adverse event id
        self.closed: set[int] = set()

    @property
    def result(self) -> DemoLoad:
        return self.loader.result

    def at(self, day: date, kind: int, action: Callable[[], None]) -> None:
        self.loader.at(day, kind, self.candidate["id"], action)

    def schedule(self) -> None:
        for visit in self.course["visits"]:
            self.at(date.fromisoformat(visit["date"]), VISIT, lambda v=visit: self.visit(v))
        for dose in self.course["doses"]:
            self.at(date.fromisoformat(dose["date"]), DOSE, lambda d=dose: self.dose(d))
        for index, event in enumerate(self.course["adverse_events"]):
            if "lab" not in event:  # a clinical event is recorded when it starts
                self.at(date.fromisoformat(event["start_date"]), AE_START, lambda i=index: self.record_event(i))
            self.at(date.fromisoformat(event["end_date"]), AE_END, lambda i=index: self.end_event(i))

    # -- visits ----------------------------------------------------------------------------------
    def visit(self, visit: dict[str, Any]) -> None:
        day = date.fromisoformat(visit["date"])
        code, repeat = visit["visit"], int(visit.get("repeat") or 0)
        if self.protocol.visit(code).anchor == "end_of_treatment" and self.end_of_treatment is None:
            # Treatment never ended by the stop rule (CMV-DNA still positive at dropout or at the end
            # of follow-up): the visit anchored to its end is not in the subject's calendar.
            self.result.count("visits_without_end_of_treatment")
            return
        for earlier in range(1, repeat):  # a weekly visit the subject did not come to
            if (code, earlier) not in self.entered:
                self.entered.add((code, earlier))
                if self.loader.attempt(f"{self.candidate['id']} {code}{earlier} missed", lambda e=earlier: visits.record_visit(
                        self.loader.uow, self.coordinator, self.id, f"{code}{e}", today=day, missed=True,
                        reason="the subject did not come to this visit")):
                    self.result.count("visits_missed")
        label = f"{code}{repeat}" if repeat else code
        self.entered.add((code, repeat))
        forms = self.loader.as_entered(visit["forms"])
        entry = self.loader.attempt(f"{self.candidate['id']} {label}", lambda: data_entry.enter_visit_data(
            self.loader.uow, self.coordinator, self.id, label, forms, today=day, visit_date=day, complete=True))
        if entry is None:
            return
        self.result.count("visits")
        self.result.count("item_values", sum(len(form.created) for form in entry.forms))
        for name, item in visit["forms"].get("hematology", {}).items():
            self.labs[name] = item["value"] if isinstance(item, dict) else item
        if entry.end_of_treatment is not None and entry.end_of_treatment.after is not None:
            self.end_of_treatment = entry.end_of_treatment.after
            self.result.count("ends_of_treatment")
        self.review_labs(day)
        for query_id in entry.queries_opened:
            self.result.count("queries_opened")
            self.at(day + ANSWER_AFTER, ANSWER, lambda q=query_id: self.answer(q))
        if self.loader.sign:
            self.at(day + SIGN_AFTER, SIGN, lambda: self.sign(label))

    def answer(self, query_id: int) -> None:
        answered = self.loader.attempt(f"query {query_id}", lambda: queries.answer_query(
            self.loader.uow, self.coordinator, query_id,
            "Checked against the source document: the value is correct as entered."))
        if answered is not None and answered.status == queries.ANSWERED:
            self.result.count("queries_answered")
            self.at(self.loader.clock.day + CLOSE_AFTER - ANSWER_AFTER, CLOSE, lambda: self.close(query_id))  # type: ignore[operator]

    def close(self, query_id: int) -> None:
        if self.loader.attempt(f"query {query_id}", lambda: queries.close_query(self.loader.uow, self.monitor, query_id)):
            self.result.count("queries_closed")

    def sign(self, label: str) -> None:
        password = self.loader.passwords.get(self.investigator.username)
        if password is None:
            self.result.skipped.append(f"{self.candidate['id']} {label}: {self.investigator.username} existed "
                                       "before, so the loader cannot sign with their password")
            return
        if self.loader.attempt(f"{self.candidate['id']} {label} signature", lambda: signatures.sign_visit(
                self.loader.uow, self.investigator, self.id, label, password=password)):
            self.result.count("signatures")

    # -- doses -----------------------------------------------------------------------------------
    def dose(self, dose: dict[str, Any]) -> None:
        day = date.fromisoformat(dose["date"])
        if self.end_of_treatment is not None and day > self.end_of_treatment:
            return  # treatment ended on the first negative CMV-DNA: no dose is due
        regimen = next(r for arm in self.protocol.arms if arm.id == self.arm for r in arm.regimens
                       if r.drug.casefold() == dose["drug"].casefold())
        record: dict[str, Any] = {"drug": regimen.drug, "date": day.isoformat(), "route": regimen.route,
                                  "given_by": f"study nurse, {self.candidate['site']}"}
        holds = [verdict for verdict in judge_holds(self.protocol, regimen, self.labs) if verdict.applies]
        if holds:
            record.update(status="held", reason="; ".join(f"{verdict.reason} ({verdict.shown()})" for verdict in holds))
            record.pop("given_by")
        elif regimen.dose_basis == "flat":
            record.update(status="given", dose=regimen.dose.value, unit=regimen.dose.unit)
        else:
            basis = {"weight_kg": self.weight_kg, **({"crcl_ml_min": float(self.crcl)} if self.crcl is not None else {})}
            planned = weight_based_dose(self.protocol, regimen, weight_kg=self.weight_kg, crcl_ml_min=basis.get("crcl_ml_min"))
            record.update(status="given", dose=planned.dose, unit=planned.unit, basis=basis)
        view = self.loader.attempt(f"{self.candidate['id']} {regimen.drug} {day}", lambda: dosing_records.record_administration(
            self.loader.uow, self.coordinator, self.id, record, today=day))
        if view is not None:
            self.result.count(f"doses_{view.status}")

    # -- adverse events --------------------------------------------------------------------------
    def _drugs(self, event: dict[str, Any], action: str) -> list[dict[str, str]]:
        related = {drug.casefold() for drug in event["related_to"]}
        arm = next(arm for arm in self.protocol.arms if arm.id == self.arm)
        return [{"drug": regimen.drug,
                 "relatedness": "probable" if regimen.drug.casefold() in related else "unlikely",
                 "action_taken": action if regimen.drug.casefold() in related else "DOSE NOT CHANGED"}
                for regimen in arm.regimens]

    def _event_data(self, event: dict[str, Any], *, ended: bool) -> dict[str, Any]:
        data: dict[str, Any] = {"term": event["ctcae_term"], "grade": event["grade"], "start_date": event["start_date"],
                                "drugs": self._drugs(event, "DOSE NOT CHANGED"),
                                "outcome": "RECOVERED/RESOLVED" if ended else "NOT RECOVERED/NOT RESOLVED"}
        if ended:
            data["end_date"] = event["end_date"]
        return data

    def record_event(self, index: int, *, ended: bool = False) -> None:
        event = self.course["adverse_events"][index]
        view = self.loader.attempt(f"{self.candidate['id']} AE {event['ctcae_term']}", lambda: adverse_events.record_adverse_event(
            self.loader.uow, self.investigator, self.id, self._event_data(event, ended=ended),
            today=self.loader.clock.day))
        if view is not None:
            self.events[index] = view.id
            self.result.count("adverse_events")
            if ended:
                self.closed.add(index)

    def end_event(self, index: int) -> None:
        if index not in self.events:
            self.record_event(index, ended=True)  # a lab event no visit saw: recorded from the local lab's report
            return
        if index in self.closed:
            return
        event = self.course["adverse_events"][index]
        changes = {"end_date": event["end_date"], "outcome": "RECOVERED/RESOLVED"}
        if self.loader.attempt(f"{self.candidate['id']} AE {event['ctcae_term']} end", lambda: adverse_events.update_adverse_event(
                self.loader.uow, self.investigator, self.events[index], changes, reason="the event resolved",
                today=self.loader.clock.day)):
            self.closed.add(index)

    def _simulated_event(self, term: str, observed_on: date) -> int | None:
        for index, event in enumerate(self.course["adverse_events"]):
            start, end = date.fromisoformat(event["start_date"]), date.fromisoformat(event["end_date"])
            if event["ctcae_term"].casefold() == term.casefold() and start - MATCH_SLACK <= observed_on <= end + MATCH_SLACK:
                return index
        return None

    def review_labs(self, day: date) -> None:
        """The investigator decides every pending lab-safety proposal of the subject on the visit day:
        confirmed when the subject has that adverse event then, dismissed otherwise."""
        uow = self.loader.uow
        for proposal in lab_safety.list_proposals(uow, self.investigator, subject_id=self.id):
            index = self._simulated_event(proposal.term, proposal.observed_on)
            if index is None or (proposal.action == "new_event" and index in self.events):
                lab_safety.dismiss_proposal(uow, self.investigator, proposal.id, reason=(
                    "not clinically significant: not an adverse event in the investigator's judgement" if index is None
                    else "already recorded as an adverse event"))
                self.result.count("proposals_dismissed")
                continue
            event = self.course["adverse_events"][index]
            details = {"drugs": self._drugs(event, "DOSE NOT CHANGED"), "outcome": "NOT RECOVERED/NOT RESOLVED"} \
                if proposal.action == "new_event" else None
            decision = self.loader.attempt(f"{self.candidate['id']} proposal {proposal.id}", lambda: lab_safety.confirm_proposal(
                uow, self.investigator, proposal.id, details, today=day))
            if decision is not None:
                self.result.count("proposals_confirmed")
                if decision.event is not None and index not in self.events:
                    self.events[index] = decision.event.id
                    self.result.count("adverse_events")
