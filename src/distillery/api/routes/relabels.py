"""``/v1/distillery/relabels``: stored inputs answered again by another (stronger) teacher.

- ``POST /v1/distillery/relabels`` ``{"teacher", "source", ...options}``: checks everything
  before the teacher is asked anything (404 for a teacher nobody serves, 400 with ``param`` for
  a bad body or a selection that matches nothing, 409 ``teacher_terms``), then returns the
  estimate (``dry_run: true``) or runs the relabelling and returns its result: the new answers
  stored beside the originals, how many agree, and the annotation queue of the disagreements
  (``distillery.curation.relabel``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import read_object

router = APIRouter(prefix="/v1/distillery/relabels", tags=["relabels"], dependencies=[ADMIN])

_BODY_LIMIT = 32 * 1024 * 1024  # a list of completion ids may be long


@router.post("")
async def create_relabel(request: Request, services: ServicesDep) -> Response:
    """Relabel stored inputs with another teacher: store its answers beside the originals and
    queue the disagreements for review. ``dry_run: true`` returns the estimate only."""
    body = await read_object(request, _BODY_LIMIT)
    return _json(await services.curation.relabel(body))
