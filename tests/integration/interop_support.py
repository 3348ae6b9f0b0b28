"""A small trial for the interchange exports, built through the real services on either protocol.

Three candidates at one site, screened on 20 May 2024 (the fixture's screening date): S-001 and
S-002 eligible, consented and randomized on 3 March 2025 (their arms are the real randomization's
choice), S-003 not eligible (NYHA class III: a screen failure). Each randomized subject gets the
baseline visit (CMV-DNA, blood count, chemistry with ULNs, vital signs, a concomitant
corticosteroid), two weekly visits — S-001's second CMV-DNA result is below the limit of
quantification, which ends its treatment by the protocol's stop rule; S-002's is still quantified,
so S-002 is on treatment, its third weekly visit due on 24 March — the doses of its arm on day 0
and, for S-001, a held ganciclovir dose and an adverse event. A monitor opens a query. Everything
is entered, validated and audited as a site would do it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from data_capture_support import HEMATOLOGY, cmv
from trial_support import add_sites, add_staff, screening_record

from cmvtrial.services import adverse_events, data_entry, dosing_records, queries, randomizing, screening
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.database import Database

RANDOMIZED_ON = date(2025, 3, 3)
TODAY = date(2025, 3, 24)
SITE = "PKUPH"
DOSES = {"interleukin-2": (1, "MIU"), "ganciclovir": (300, "mg")}


@dataclass
class InteropTrial:
    database: Database
    uow: UnitOfWork
    protocol_id: str
    admin: Actor
    investigator: Actor
    coordinator: Actor
    monitor: Actor
    data_manager: Actor
    statistician: Actor
    first: int       # S-001: treatment ended by a CMV-DNA below the limit on 17 March
    second: int      # S-002: still on treatment
    failed: int      # S-003: screen failure
    arms: dict[int, str]


def clock_at(database: Database, on: date, hour: int = 9) -> UnitOfWork:
    return UnitOfWork(database.session_factory, clock=lambda: datetime(on.year, on.month, on.day, hour, tzinfo=UTC))


def make_interop_trial(database: Database, protocol_id: str, admin: Actor) -> InteropTrial:
    uow = clock_at(database, TODAY)
    add_sites(uow, admin, SITE)
    actors = add_staff(uow, admin, [("inv", "investigator", SITE), ("coord", "coordinator", SITE),
                                    ("mon", "monitor", SITE), ("dm", "data-manager", None),
                                    ("stat", "statistician", None)])
    coordinator = actors["coord"]
    day = clock_at(database, RANDOMIZED_ON, 8)
    ids = []
    for number, name in (("S-001", "eligible"), ("S-002", "eligible_iu_mg_dl"), ("S-003", "not_eligible_nyha3")):
        subject = screening.register_subject(day, coordinator, SITE, number)
        screening.enter_screening_data(day, coordinator, subject.id, screening_record(name))
        ids.append(subject.id)
    first, second, failed = ids
    arms = {}
    for subject_id in (first, second):
        screening.record_consent(day, coordinator, subject_id, RANDOMIZED_ON)
        arms[subject_id] = randomizing.randomize_subject(day, coordinator, subject_id).arm

    enter = data_entry.enter_visit_data
    for subject_id, load in ((first, 20000), (second, 30000)):
        enter(uow, coordinator, subject_id, "BL", {
            "cmv_load": cmv(RANDOMIZED_ON, load), "hematology": HEMATOLOGY,
            "chemistry": {"serum_creatinine": {"value": 70, "unit": "umol/L"}, "alt": 50, "alt_uln": 40, "ast": 30,
                          "ast_uln": 40, "total_bilirubin": 10, "total_bilirubin_uln": 21},
            "vitals": {"weight_kg": 58.5, "height_cm": 162, "temperature": 37.2},
            "lymphocyte_subsets": {"nk_abs": 150, "nk_pct": 8},
            "concomitant_corticosteroid": [{"drug": "prednisone", "daily_dose_mg": 20, "start_date": "2025-02-01"}],
        }, today=TODAY, visit_date=RANDOMIZED_ON, complete=["cmv_load", "hematology"])
        enter(uow, coordinator, subject_id, "TW1", {"cmv_load": cmv(date(2025, 3, 10), load / 10)},
              today=TODAY, visit_date=date(2025, 3, 10))
    enter(uow, coordinator, first, "TW2", {"cmv_load": cmv(date(2025, 3, 17), result="detected_below_lloq")},
          today=TODAY, visit_date=date(2025, 3, 17))
    enter(uow, coordinator, second, "TW2", {"cmv_load": cmv(date(2025, 3, 17), 800)},
          today=TODAY, visit_date=date(2025, 3, 17))
    from cmvtrial.protocols import load_shipped_protocol

    protocol, _text = load_shipped_protocol(protocol_id)
    routes = {regimen.drug: regimen.route for arm in protocol.arms for regimen in arm.regimens}
    for subject_id in (first, second):
        for drug in [r.drug for r in protocol.arm(arms[subject_id]).regimens]:
            dose, unit = DOSES[drug]
            dosing_records.record_administration(uow, coordinator, subject_id, {
                "drug": drug, "dose": dose, "unit": unit, "route": routes[drug], "date": RANDOMIZED_ON.isoformat(),
                "given_by": "Nurse Li"}, today=TODAY)
    dosing_records.record_administration(uow, coordinator, first, {
        "drug": "ganciclovir", "status": "held", "date": "2025-03-04", "reason": "platelets 20"}, today=TODAY)
    drugs = [{"drug": drug, "relatedness": "possible", "action_taken": "DOSE NOT CHANGED"}
             for drug in [r.drug for r in protocol.arm(arms[first]).regimens]]
    adverse_events.record_adverse_event(uow, actors["inv"], first, {
        "term": "Neutrophil count decreased", "start_date": "2025-03-05", "grade": 3,
        "outcome": "RECOVERING/RESOLVING", "drugs": drugs}, today=TODAY)
    queries.open_query(uow, actors["mon"], second, "BL", "cmv_load", "cmv_dna", "Which assay?")
    return InteropTrial(database, uow, protocol_id, admin, actors["inv"], coordinator, actors["mon"], actors["dm"],
                        actors["stat"], first, second, failed, arms)
