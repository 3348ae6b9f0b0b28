"""What the routers of issues 3-8 share: path and query parameters, the adapter's clock, JSON.

Parameters are constrained at the edge so that a request the database could not even hold (an id
beyond a 32-bit integer, a NUL in a visit label) is ``invalid_input`` naming the parameter rather
than a database error. The clock is read here, never in the services: ``today`` is the server's
UTC date, ``now`` its UTC time (the app's clock, which tests move).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import Field

from cmvtrial.adapters.api.context import AppContext

MAX_ID = 2_147_483_647  # a PostgreSQL integer

SubjectId = Annotated[int, Path(ge=1, le=MAX_ID, description="The subject's id (GET /subjects lists them).")]
VisitLabel = Annotated[
    str, Path(pattern=r"^[A-Za-z][A-Za-z0-9]{0,15}$", description="A visit label: BL, TW1, TW2, ..., W12, FU3M.")
]
SiteCode = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,16}$", description="The site's code.")]
SiteFilter = Annotated[
    str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,16}$", description="Only this site (its code).")
]
SubjectFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this subject (its id).")]

#: A reason kept in the audit trail (request bodies).
Reason = Field(None, max_length=2000, description="Why the change is made; kept in the audit trail.")


def today(context: AppContext) -> date:
    return context.clock().date()


def now(context: AppContext) -> datetime:
    return context.clock()


def jsonable(value: Any) -> Any:
    """A service's answer (dataclasses, dates, enums) as plain JSON data."""
    from cmvtrial.core.audit_chain import to_jsonable

    return to_jsonable(value)
