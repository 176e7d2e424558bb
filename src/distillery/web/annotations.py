"""Annotation pages: the queues, one queue (claim the next item), and the item editor (correct
the output, rate, tag, accept or skip). A stale edit (409) is shown as a message, never lost."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from distillery.annotations.service import STATUSES, AnnotationItem, AnnotationQueue
from distillery.errors import ConflictError, InvalidRequestError
from distillery.web.auth import LOGIN
from distillery.web.completions import message_view
from distillery.web.contexts import (
    AnnotationsPage,
    ItemLine,
    ItemPage,
    QueueLine,
    QueuePage,
)
from distillery.web.render import PageRoute, redirect, render, services_of, url_with

router = APIRouter(route_class=PageRoute, dependencies=[LOGIN], include_in_schema=False)

REVIEWER_COOKIE = "distillery_reviewer"
ACTIONS = ("save", "accept", "skip", "release")


def _source(queue: AnnotationQueue) -> str:
    src = queue.source
    if src.get("type") == "eval_run":
        return f"eval run {src.get('run_id')}"
    if src.get("completion_ids"):
        return f"{len(src['completion_ids'])} selected completions"
    parts = [f"model={src['model']}"] if src.get("model") else []
    parts += [f"{k}={v}" for k, v in (src.get("metadata") or {}).items()]
    return "filter " + (" ".join(parts) if parts else "(all)")


def queue_line(queue: AnnotationQueue) -> QueueLine:
    return QueueLine(
        id=queue.id,
        name=queue.name,
        created_at=queue.created_at,
        priority=queue.priority,
        source=_source(queue),
        counts=dict(queue.counts),
    )


def _reviewer(request: Request) -> str:
    return unquote(request.cookies.get(REVIEWER_COOKIE, "")) or "reviewer"


def _remember(response: Response, reviewer: str) -> Response:
    response.set_cookie(
        REVIEWER_COOKIE,
        quote(reviewer, safe=""),
        max_age=180 * 86_400,
        path="/",
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/annotations")
def queues(request: Request, after: str | None = None) -> Response:
    page = services_of(request).annotations.list_queues(after=after, limit=50)
    next_url = (
        url_with("/annotations", {"after": page.data[-1].id})
        if page.has_more and page.data
        else None
    )
    context = AnnotationsPage(queues=[queue_line(q) for q in page.data], next_url=next_url)
    return render(request, "annotations.html", context, title="Annotations", nav="annotations")


@router.get("/annotations/{queue_id}")
def queue_page(
    request: Request,
    queue_id: str,
    status: str = "",
    after: str | None = None,
    limit: int = Query(default=50, ge=1, le=500),
) -> Response:
    svc = services_of(request).annotations
    queue = svc.get_queue(queue_id)
    wanted = status if status in STATUSES else None
    page = svc.list_items(queue_id, status=wanted, after=after, limit=limit)
    items = [
        ItemLine(
            id=i.id,
            completion_id=i.completion_id,
            status=i.status,
            claimed_by=i.claimed_by,
            rating=i.rating,
            corrected=i.corrected_output is not None,
            updated_at=i.updated_at,
        )
        for i in page.data
    ]
    next_url = None
    if page.has_more and page.data:
        next_url = url_with(
            f"/annotations/{quote(queue_id, safe='')}",
            {"status": wanted, "after": page.data[-1].id},
        )
    context = QueuePage(
        queue=queue_line(queue),
        reviewer=_reviewer(request),
        items=items,
        status=wanted or "",
        next_url=next_url,
    )
    return render(request, "queue.html", context, title=queue.name, nav="annotations")


def _item_url(queue_id: str, item_id: str) -> str:
    return f"/annotations/{quote(queue_id, safe='')}/items/{quote(item_id, safe='')}"


@router.post("/annotations/{queue_id}/claim")
def claim(request: Request, queue_id: str, reviewer: Annotated[str, Form()] = "") -> Response:
    name = reviewer.strip() or _reviewer(request)
    item = services_of(request).annotations.claim(queue_id, name)
    if item is None:
        response = redirect(
            f"/annotations/{quote(queue_id, safe='')}", flash="Nothing left to review here."
        )
    else:
        response = redirect(_item_url(queue_id, item.id))
    return _remember(response, name)


def _item_page(
    request: Request,
    queue: AnnotationQueue,
    item: AnnotationItem,
    *,
    draft: dict[str, Any] | None = None,
    conflict: str | None = None,
) -> Response:
    svc = services_of(request).annotations
    view = svc.item_view(item, queue)
    original = str(view.get("output") or "")
    draft = draft or {}
    tags = draft.get("tags", ", ".join(item.tags))
    context = ItemPage(
        queue=queue_line(queue),
        item_id=item.id,
        completion_id=item.completion_id,
        status=item.status,
        claimed_by=item.claimed_by,
        version=item.version,
        model=view.get("model"),
        messages=[message_view(m) for m in (view.get("input") or {}).get("messages") or []],
        original=original,
        corrected=draft.get("corrected_output", item.corrected_output or original),
        rating=draft.get("rating", item.rating),
        tags=str(tags),
        comment=str(draft.get("comment", item.comment or "")),
        reviewer=_reviewer(request),
        conflict=conflict,
    )
    title = f"{queue.name} · {item.id}"
    return render(
        request,
        "annotation_item.html",
        context,
        title=title,
        nav="annotations",
        status=409 if conflict else 200,
    )


@router.get("/annotations/{queue_id}/items/{item_id}")
def item_page(request: Request, queue_id: str, item_id: str) -> Response:
    svc = services_of(request).annotations
    return _item_page(request, svc.get_queue(queue_id), svc.get_item(queue_id, item_id))


def _rating(value: str) -> int | None:
    if not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidRequestError("The rating is a number from 1 to 5.", param="rating") from None


@router.post("/annotations/{queue_id}/items/{item_id}")
def submit_item(
    request: Request,
    queue_id: str,
    item_id: str,
    version: Annotated[int, Form()],
    action: Annotated[str, Form()] = "save",
    corrected_output: Annotated[str, Form()] = "",
    rating: Annotated[str, Form()] = "",
    tags: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
) -> Response:
    svc = services_of(request).annotations
    if action not in ACTIONS:
        raise InvalidRequestError(f"Unknown action '{action}'.", param="action")
    # Browsers send textarea line breaks as CRLF; store what the reviewer typed.
    text = corrected_output.replace("\r\n", "\n")
    update = {
        "version": version,
        "action": action,
        "corrected_output": text,
        "rating": _rating(rating),
        "tags": [t.strip() for t in tags.split(",") if t.strip()],
        "comment": comment.strip() or None,
    }
    try:
        item = svc.submit(queue_id, item_id, update)
    except ConflictError as exc:
        draft = {**update, "tags": tags, "comment": comment}
        return _item_page(
            request,
            svc.get_queue(queue_id),
            svc.get_item(queue_id, item_id),
            draft=draft,
            conflict=exc.message + " Your edit is kept below: submit it again to replace theirs.",
        )
    queue_url = f"/annotations/{quote(queue_id, safe='')}"
    if action == "save":
        return redirect(_item_url(queue_id, item.id), flash="Saved.")
    if action == "release":
        return redirect(queue_url, flash=f"Released {item.id} back to the queue.")
    done = "Accepted" if action == "accept" else "Skipped"
    reviewer = item.claimed_by or _reviewer(request)
    following = svc.claim(queue_id, reviewer)
    if following is None:
        return redirect(queue_url, flash=f"{done} {item.id}. Nothing left to review here.")
    return redirect(_item_url(queue_id, following.id), flash=f"{done} {item.id}. Next item:")
