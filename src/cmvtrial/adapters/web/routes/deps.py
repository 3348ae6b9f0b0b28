"""Dependency aliases for page routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.datastructures import FormData

from cmvtrial.adapters.api.auth import page_actor
from cmvtrial.adapters.web.rendering import checked_form
from cmvtrial.services.permissions import Actor

#: The signed-in user of a page; a visitor without a valid session is sent to the login page.
PageActor = Annotated[Actor, Depends(page_actor)]
#: A POSTed form whose CSRF token was checked (declare it after PageActor).
CheckedForm = Annotated[FormData, Depends(checked_form)]
