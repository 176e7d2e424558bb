"""``/v1/chat/completions``: the stored-completions endpoints (create is the gateway's:
``api/routes/capture.py``)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import list_response, metadata_filter, read_json
from distillery.errors import InvalidRequestError
from distillery.wire.chat import validate_metadata

router = APIRouter(prefix="/v1/chat/completions", tags=["chat"])


@router.get("", dependencies=[ADMIN])
async def list_chat_completions(
    request: Request,
    services: ServicesDep,
    model: str | None = None,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "asc",
) -> Response:
    page = services.stored_completions.list(
        model=model,
        metadata=metadata_filter(request) or None,
        after=after,
        limit=limit,
        order=order,
    )
    data = [c.to_chat_completion() for c in page.data]
    return list_response(data, page.has_more)


@router.get("/{completion_id}", dependencies=[ADMIN])
async def retrieve_chat_completion(completion_id: str, services: ServicesDep) -> Response:
    return _json(services.stored_completions.get(completion_id).to_chat_completion())


@router.post("/{completion_id}", dependencies=[ADMIN])
async def update_chat_completion(
    completion_id: str, request: Request, services: ServicesDep
) -> Response:
    body = await read_json(request, 1024 * 1024)
    if not isinstance(body, dict) or "metadata" not in body:
        raise InvalidRequestError("Missing required parameter: 'metadata'.", param="metadata")
    unknown = sorted(set(body) - {"metadata"})
    if unknown:
        raise InvalidRequestError(
            f"Unrecognized request argument supplied: {unknown[0]}. Only 'metadata' can be updated.",
            param=unknown[0],
        )
    metadata = validate_metadata(body["metadata"]) or {}
    return _json(
        services.stored_completions.update_metadata(completion_id, metadata).to_chat_completion()
    )


@router.delete("/{completion_id}", dependencies=[ADMIN])
async def delete_chat_completion(completion_id: str, services: ServicesDep) -> Response:
    services.stored_completions.delete(completion_id)
    held = services.lineage.completion_datasets(completion_id, must_exist=False)["data"]
    return _json(  # distillery's: the dataset versions that still hold a copy of it
        {
            "id": completion_id,
            "object": "chat.completion.deleted",
            "deleted": True,
            "datasets": held,
        }
    )


@router.get("/{completion_id}/messages", dependencies=[ADMIN])
async def list_messages(
    completion_id: str,
    services: ServicesDep,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "asc",
) -> Response:
    # ChatCompletionStoreMessage: optional fields (tool_calls, annotations...) absent when empty
    from distillery.wire.chat_store import ChatCompletionStoreMessage

    completion = services.stored_completions.get(completion_id)
    messages = [
        ChatCompletionStoreMessage.from_message(f"{completion_id}-{i}", message).to_wire()
        for i, message in enumerate(completion.messages)
        if isinstance(message, dict)
    ]
    if order == "desc":
        messages.reverse()
    if after is not None:
        idx = next((i for i, m in enumerate(messages) if m["id"] == after), None)
        if idx is None:
            raise InvalidRequestError(f"No message found with id '{after}'.", param="after")
        messages = messages[idx + 1 :]
    page = messages[:limit]
    return list_response(page, len(messages) > limit)
