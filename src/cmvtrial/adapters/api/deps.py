"""Dependency aliases for routes: ``actor: ActorDep`` and ``context: ContextDep`` say it all.

Pattern from fastapi/full-stack-fastapi-template (``backend/app/api/deps.py``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cmvtrial.adapters.api.auth import api_actor
from cmvtrial.adapters.api.context import AppContext, app_context
from cmvtrial.services.permissions import Actor

#: The authenticated caller (bearer token or session cookie + CSRF header); 401/403 otherwise.
ActorDep = Annotated[Actor, Depends(api_actor)]
#: The app's settings, database and policies.
ContextDep = Annotated[AppContext, Depends(app_context)]
