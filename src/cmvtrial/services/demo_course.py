"""One randomized subject of the demo trial, entered step by step through the services (demo_trial.py).

Why a module of its own: the loader (demo_trial.py) sets the trial up, screens and randomizes; once
the real randomization has chosen the arm, everything that happens to the subject follows that
arm's simulated course — visits and their forms, doses and holds, adverse events and lab-safety
decisions, queries answered and closed, signatures, and the end of study — and that is this
module's one concept. Each step is queued on its simulated date (``Loader.at``) and runs through
the same use case a site would use, as the person who would do it.

The end of study: a simulated dropout is withdrawn by the investigator on the dropout day, with the
simulator's reason (withdrew consent, lost to follow-up, death: the CDISC list of
core/disposition.py); a subject whose course reaches the final visit (the visit anchored to the end
of treatment, FU3M) has the completion recorded by the investigator the same day, once the visit is
entered. A dropout dated on or after a completed final visit changes nothing (the subject finished
the protocol) and is counted as ``dropouts_after_final_visit``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from cmvtrial.core.disposition import withdrawal_reason
from cmvtrial.core.dosing import judge_holds, weight_based_dose
from cmvtrial.core.eligibility import expression_values
from cmvtrial.errors import InvalidInput
from cmvtrial.services import (
    adverse_events,
    data_entry,
    dosing_records,
    end_of_study,
    lab_safety,
    queries,
    signatures,
    visits,
)
from cmvtrial.services.permissions import COORDINATOR, INVESTIGATOR, MONITOR

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.services.demo_trial import DemoLoad
    from cmvtrial.services.demo_trial import _Loader as Loader

#: Days after a visit that its queries are answered, closed, and the visit signed (work habits of a
#: site, not trial rules).
ANSWER_AFTER, CLOSE_AFTER, SIGN_AFTER = timedelta(days=2), timedelta(days=5), timedelta(days=3)
#: A lab-safety proposal is matched to a simulated event observed up to this long before or after it.
MATCH_SLACK = timedelta(days=3)

# Order of the actions of one day: the visit's samples come before the day's dose and the safety
# work; the end of study comes last (completion before a dropout of the same day).
SCREEN, RANDOMIZE, VISIT, DOSE, AE_START, AE_END, ANSWER, CLOSE, SIGN, COMPLETE, WITHDRAW = range(11)


class SubjectCourse:
    """One randomized subject's course, entered step by step."""

    def __init__(self, loader: Loader, candidate: dict[str, Any], subject_id: int, arm: str) -> None:
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
        self.completed = False

    @property
    def result(self) -> DemoLoad:
        return self.loader.result

    def at(self, day: date, kind: int, action: Callable[[], None]) -> None:
        self.loader.at(day, kind, self.candidate["id"], action)

    def schedule(self) -> None:
        dropout = self.course.get("dropout")
        if dropout:  # the day the simulated patient left; WITHDRAW comes after the day's visit and dose
            self.at(date.fromisoformat(dropout["date"]), WITHDRAW, lambda: self.withdraw(dropout))
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
        if self.protocol.visit(code).anchor == "end_of_treatment" and not repeat:
            self.at(day, COMPLETE, self.complete)  # the final visit: the investigator records completion
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

    # -- end of study ----------------------------------------------------------------------------
    def withdraw(self, dropout: dict[str, Any]) -> None:
        """The simulated dropout, withdrawn by the investigator on its day with the simulator's reason
        (a reason outside the CDISC list is "other", in the simulator's words)."""
        if self.completed:
            self.result.count("dropouts_after_final_visit")  # the final visit was done: the subject completed
            return
        try:
            reason, details = withdrawal_reason(dropout["reason"]).code, None
        except InvalidInput:
            reason, details = "other", str(dropout["reason"])
        day = date.fromisoformat(dropout["date"])
        view = self.loader.attempt(f"{self.candidate['id']} withdrawal", lambda: end_of_study.withdraw_subject(
            self.loader.uow, self.investigator, self.id, reason=reason, on_date=day, today=day, details=details))
        if view is not None:
            self.result.count(f"subjects_{view.status}")

    def complete(self) -> None:
        view = self.loader.attempt(f"{self.candidate['id']} completion", lambda: end_of_study.complete_subject(
            self.loader.uow, self.investigator, self.id, today=self.loader.clock.day))  # type: ignore[arg-type]
        if view is not None:
            self.completed = True
            self.result.count("subjects_completed")
