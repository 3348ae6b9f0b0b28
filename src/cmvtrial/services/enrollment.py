"""Enrollment against the target: randomized subjects by site and by arm (the dashboard's panel).

Why a service of its own: the balance report (randomizing.py) is for unblinded central roles and
counts strata; a site wants to see how far its trial has come. Arm counts are shown only where the
arms are no secret — an open-label protocol (``design.masking: none``, seed 000 "Masking NONE"), or
a role that may see the balance anyway — otherwise only totals. Site users see their own site.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from cmvtrial.services import permissions
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_versions import parsed, version_in_force
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import Allocation, Site, Subject


@dataclass(frozen=True)
class SiteEnrollment:
    site_code: str
    site_name: str
    randomized: int
    screened: int
    by_arm: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Enrollment:
    """``arms`` (id -> label) is empty when the actor may not see arm counts."""

    target: int
    randomized: int
    arms: dict[str, str]
    by_arm: dict[str, int]
    sites: tuple[SiteEnrollment, ...]

    @property
    def percent_of_target(self) -> float:
        return 100.0 * self.randomized / self.target if self.target else 0.0

    def to_dict(self) -> dict[str, object]:
        return {"target": self.target, "randomized": self.randomized, "arms": self.arms, "by_arm": self.by_arm,
                "sites": [{"site": s.site_code, "name": s.site_name, "screened": s.screened,
                           "randomized": s.randomized, "by_arm": s.by_arm} for s in self.sites]}


def enrollment(uow: UnitOfWork, actor: Actor) -> Enrollment:
    """Randomized (and screened) subjects per site the actor sees, per arm when arms may be shown."""
    permissions.require(actor, "enrollment.view")
    with uow.reading():
        protocol = parsed(version_in_force(uow))
        show_arms = protocol.design.masking == "none" or permissions.allowed(actor, "randomization.balance")
        scope = permissions.site_scope(actor)
        sites = select(Site).order_by(Site.code)
        if scope is not None:
            sites = sites.where(Site.id == scope)
        screened = dict(uow.session.execute(select(Subject.site_id, func.count()).group_by(Subject.site_id)).all())
        arm_counts: dict[int, dict[str, int]] = {}
        for site_id, arm_id, count in uow.session.execute(
                select(Subject.site_id, Allocation.arm_id, func.count()).join(Allocation, Allocation.subject_id == Subject.id)
                .group_by(Subject.site_id, Allocation.arm_id)):
            arm_counts.setdefault(site_id, {})[arm_id] = count
        arms = {arm.id: arm.label for arm in protocol.arms}
        rows = []
        for site in uow.session.scalars(sites):
            counts = arm_counts.get(site.id, {})
            rows.append(SiteEnrollment(site.code, site.name, sum(counts.values()), int(screened.get(site.id, 0)),
                                       {arm: counts.get(arm, 0) for arm in arms} if show_arms else {}))
    total_by_arm = {arm: sum(row.by_arm.get(arm, 0) for row in rows) for arm in arms} if show_arms else {}
    return Enrollment(protocol.population.target_enrollment, sum(row.randomized for row in rows),
                      arms if show_arms else {}, total_by_arm, tuple(rows))
