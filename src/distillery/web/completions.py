"""Completions pages: the filtered, paginated list with row actions, and one completion's detail."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from distillery.capture.stored import StoredCompletion
from distillery.errors import InvalidRequestError
from distillery.text.lang import is_japanese
from distillery.web import selection
from distillery.web.auth import LOGIN
from distillery.web.contexts import (
    CompletionDetailPage,
    CompletionFilters,
    CompletionLine,
    CompletionsPage,
    Message,
)
from distillery.web.render import PageRoute, render, services_of, url_with
from distillery.wire import content as wire_content

router = APIRouter(route_class=PageRoute, dependencies=[LOGIN], include_in_schema=False)

PREVIEW_CHARS = 140


def content_text(content: Any) -> str:
    """A message's content as a page shows it: its text parts one per line, other parts as
    ``[type]`` (the rules are :mod:`distillery.wire.content`'s)."""
    return wire_content.content_text(content, mark_other=True, sep="\n")


def message_view(raw: Any) -> Message:
    if not isinstance(raw, dict):
        return Message(role="?", text=str(raw))
    text = content_text(raw.get("content"))
    if not text and raw.get("refusal"):
        text = str(raw["refusal"])
    return Message(
        role=str(raw.get("role", "?")),
        text=text,
        name=raw.get("name"),
        lang="ja" if is_japanese(text) else None,
        tool_calls=_tool_calls(raw.get("tool_calls")),
    )


def _tool_calls(value: Any) -> list[dict[str, Any]]:
    """Stored tool calls as a list of objects, whatever a client or an upstream sent (a stored
    record that is not well-formed must not break the pages)."""
    if not value:
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [c if isinstance(c, dict) else {"value": c} for c in value]
    return [{"value": value}]


def _choices(c: StoredCompletion) -> list[dict[str, Any]]:
    response = c.response if isinstance(c.response, dict) else {}
    choices = response.get("choices")
    return [ch for ch in choices if isinstance(ch, dict)] if isinstance(choices, list) else []


def _outputs(c: StoredCompletion) -> list[Message]:
    return [message_view(ch.get("message") or {}) for ch in _choices(c)]


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def _line(c: StoredCompletion) -> CompletionLine:
    users = [m for m in c.messages if isinstance(m, dict) and m.get("role") == "user"]
    prompt = content_text(users[-1].get("content")) if users else ""
    outputs = _outputs(c)
    output = outputs[0].text if outputs else ""
    if c.status == "failed" and c.error:
        output = f"error: {c.error.get('message', '')}"
    tokens = (
        None if c.prompt_tokens is None else (c.prompt_tokens or 0) + (c.completion_tokens or 0)
    )
    return CompletionLine(
        id=c.id,
        created_at=c.created_at,
        model=c.model,
        status=c.status,
        prompt=_preview(prompt),
        output=_preview(output),
        metadata=c.metadata,
        tokens=tokens,
        cost_usd=c.cost_usd,
        latency_ms=c.latency_ms,
    )


def parse_day(value: str, *, param: str, end: bool = False) -> int | None:
    """``YYYY-MM-DD`` (UTC) as Unix seconds: the day's start, or its last second with ``end``."""
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(f"'{value}' is not a date (YYYY-MM-DD).", param=param) from None
    start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
    return start + 86_399 if end else start


def parse_meta(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidRequestError(f"Metadata filter '{pair}' is not key=value.", param="meta")
        out[key.strip()] = value.strip()
    return out


@router.get("/completions")
def completions_list(
    request: Request,
    model: str = "",
    meta: list[str] = Query(default=[]),
    since: str = "",
    until: str = "",
    q: str = "",
    status: str = "",
    after: str | None = None,
    before: str | None = None,
    limit: int = Query(default=50, ge=1, le=500),
) -> Response:
    services = services_of(request)
    filters = CompletionFilters(
        model=model.strip(),
        meta=[m for m in meta if m.strip()],
        since=since,
        until=until,
        q=q.strip(),
        status=status if status in ("completed", "failed") else "",
        limit=limit,
    )
    criteria: dict[str, Any] = {
        "model": filters.model or None,
        "metadata": parse_meta(filters.meta) or None,
        "created_after": parse_day(since, param="since"),
        "created_before": parse_day(until, param="until", end=True),
        "search": filters.q or None,
        "status": filters.status or None,
    }
    base = filters.query()
    prev_url = next_url = None
    if before:
        page = services.stored_completions.list(order="asc", after=before, limit=limit, **criteria)
        rows = list(reversed(page.data))
        if page.has_more and rows:
            prev_url = url_with("/completions", [*base, ("before", rows[0].id)])
        if rows:
            next_url = url_with("/completions", [*base, ("after", rows[-1].id)])
    else:
        page = services.stored_completions.list(order="desc", after=after, limit=limit, **criteria)
        rows = page.data
        if page.has_more and rows:
            next_url = url_with("/completions", [*base, ("after", rows[-1].id)])
        if after and rows:
            prev_url = url_with("/completions", [*base, ("before", rows[0].id)])
    models = sorted({m.id for m in services.providers.models()})
    context = CompletionsPage(
        filters=filters,
        rows=[_line(c) for c in rows],
        models=models,
        prev_url=prev_url,
        next_url=next_url,
        return_to=str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        **selection.choices(services),
    )
    return render(request, "completions.html", context, title="Completions", nav="completions")


@router.get("/completions/{completion_id}")
def completion_detail(request: Request, completion_id: str) -> Response:
    c = services_of(request).stored_completions.get(completion_id)
    response = c.response if isinstance(c.response, dict) else {}
    usage = response.get("usage")
    usage = dict(usage) if isinstance(usage, dict) else {} if usage is None else {"usage": usage}
    if not usage and c.prompt_tokens is not None:
        usage = {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "cached_tokens": c.cached_tokens,
        }
    params = {k: v for k, v in c.request.items() if k not in ("messages", "metadata", "store")}
    choices = _choices(c)
    context = CompletionDetailPage(
        id=c.id,
        created_at=c.created_at,
        model=c.model,
        provider=c.provider,
        status=c.status,
        stream=c.stream,
        messages=[message_view(m) for m in c.messages],
        outputs=_outputs(c),
        finish_reasons=[str(ch.get("finish_reason")) for ch in choices],
        metadata=c.metadata,
        params=params,
        usage=usage,
        latency_ms=c.latency_ms,
        cost_usd=c.cost_usd,
        error=c.error,
        request=c.request,
        response=c.response,
        requested_model=c.requested_model,
        route_id=c.route_id,
    )
    return render(request, "completion.html", context, title=c.id, nav="completions")
