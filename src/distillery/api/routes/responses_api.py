"""``/v1/responses``: the stored responses of OpenAI's Responses API (``distillery.capture.responses``;
create is the gateway's: ``api/routes/capture.py``)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response, list_response
from distillery.capture.responses import ResponsesService
from distillery.errors import InvalidRequestError
from distillery.services import Services

router = APIRouter(prefix="/v1/responses", tags=["responses"])


def responses_service(services: Services) -> ResponsesService:
    """The process's Responses API service (``Services.responses``)."""
    return services.responses


@router.get("/{response_id}", dependencies=[ADMIN])
async def retrieve_response(response_id: str, services: ServicesDep) -> Response:
    """A stored response (its metadata as it is now)."""
    return json_response(responses_service(services).get(response_id))


@router.delete("/{response_id}", dependencies=[ADMIN])
async def delete_response(response_id: str, services: ServicesDep) -> Response:
    """Delete a stored response (and the stored completion it is)."""
    return json_response(responses_service(services).delete(response_id))


@router.get("/{response_id}/input_items", dependencies=[ADMIN])
async def list_input_items(
    response_id: str,
    services: ServicesDep,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    """The input items of a stored response (newest first unless ``order=asc``)."""
    items = responses_service(services).input_items(response_id)
    if order == "desc":
        items.reverse()
    if after is not None:
        idx = next((i for i, item in enumerate(items) if item.get("id") == after), None)
        if idx is None:
            raise InvalidRequestError(f"No input item found with id '{after}'.", param="after")
        items = items[idx + 1 :]
    return list_response(items[:limit], len(items) > limit)
