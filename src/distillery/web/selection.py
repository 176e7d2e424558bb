"""Actions on completions selected in the list: Evaluate (an eval run over them), Distill (a new
dataset), Add to dataset (its next version), Annotate (a new review queue). Each is a form post
that calls the core service, then redirects to what it made."""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from distillery.errors import InvalidRequestError, NotFoundError
from distillery.services import Services
from distillery.web.auth import LOGIN
from distillery.web.contexts import Action, Option
from distillery.web.render import PageRoute, redirect, services_of

router = APIRouter(route_class=PageRoute, dependencies=[LOGIN], include_in_schema=False)

MAX_SELECTED = 1000
OPTIONS = 100
ITEMS_PAGE = 1000


def actions() -> list[Action]:
    return [
        Action("evaluate", "Evaluate", True),
        Action("distill", "Distill", True),
        Action("add", "Add to dataset", True),
        Action("annotate", "Annotate", True),
    ]


def choices(services: Services) -> dict[str, Any]:
    """The actions and the option lists the selection form offers."""
    evals = services.evals.list_evals(limit=OPTIONS, order="desc")["data"]
    datasets = services.datasets.list(limit=OPTIONS).data
    return {
        "actions": actions(),
        "evals": [Option(str(e["id"]), str(e.get("name") or e["id"])) for e in evals],
        "datasets": [
            Option(d.id, f"{d.name} (v{d.latest_version})" if d.latest_version else d.name)
            for d in datasets
        ],
    }


def _evaluate(services: Services, eval_id: str, ids: list[str]) -> str:
    if not eval_id:
        raise InvalidRequestError("Choose an eval to run on the selection.", param="eval_id")
    services.stored_completions.get(ids[0])  # 404 page for a stale selection
    run = services.evals.create_run(
        eval_id,
        {
            "name": f"{len(ids)} selected completion{'s' if len(ids) != 1 else ''}",
            "data_source": {"type": "completions", "source": {"type": "stored_completions"}},
        },
        background=True,
        state={"total": len(ids), "completion_ids": ids},
    )
    return f"/evals/{quote(eval_id, safe='')}/runs/{quote(str(run['id']), safe='')}"


def _distill(services: Services, name: str, ids: list[str]) -> str:
    name = name.strip()
    if not name:
        raise InvalidRequestError("Name the new dataset.", param="dataset_name")
    try:
        existing = services.datasets.get(name)
    except NotFoundError:
        existing = None
    if existing is not None:
        raise InvalidRequestError(
            f"A dataset named '{name}' exists: use Add to dataset to make its next version.",
            param="dataset_name",
        )
    version = services.datasets.create_version(name, {"source": {"completion_ids": ids}})
    return f"/datasets/{quote(version.dataset_id, safe='')}?version={version.version}"


def _add(services: Services, dataset_id: str, ids: list[str]) -> str:
    """The next version of a dataset: its latest version's completions plus the selection, built
    with the same options (split, dedupe, ...)."""
    if not dataset_id:
        raise InvalidRequestError("Choose the dataset to add to.", param="dataset_id")
    svc = services.datasets
    dataset = svc.get(dataset_id)
    latest = svc.get_version(dataset.id)
    previous: list[str] = []
    after: int | None = None
    while True:
        page = svc.list_items(dataset.id, latest.version, after=after, limit=ITEMS_PAGE)
        for item in page.data:
            if item.completion_id is None:
                raise InvalidRequestError(
                    f"{dataset.name} v{latest.version} holds imported examples (not stored "
                    "completions); build its next version with `distillery datasets` instead.",
                    param="dataset_id",
                )
            previous.append(item.completion_id)
        if not page.has_more or not page.data:
            break
        after = page.data[-1].seq
    spec = {k: v for k, v in latest.spec.items() if k != "source"}
    merged = list(dict.fromkeys([*previous, *ids]))
    version = svc.create_version(dataset.name, {**spec, "source": {"completion_ids": merged}})
    return f"/datasets/{quote(dataset.id, safe='')}?version={version.version}"


def _annotate(services: Services, name: str, ids: list[str]) -> str:
    label = name.strip() or f"{len(ids)} completions {time.strftime('%Y-%m-%d %H:%M')}"
    queue = services.annotations.create_queue(
        {
            "name": label,
            "source": {"type": "completions", "completion_ids": ids},
            "priority": "oldest",
        }
    )
    return f"/annotations/{quote(queue.id, safe='')}"


@router.post("/completions/actions")
async def completions_action(
    request: Request,
    action: Annotated[str, Form()],
    ids: Annotated[list[str], Form()] = [],  # noqa: B006
    return_to: Annotated[str, Form()] = "/completions",
    eval_id: Annotated[str, Form()] = "",
    dataset_name: Annotated[str, Form()] = "",
    dataset_id: Annotated[str, Form()] = "",
    queue_name: Annotated[str, Form()] = "",
) -> Response:
    services = services_of(request)
    if action not in {a.name for a in actions()}:
        raise InvalidRequestError(f"Unknown action '{action}'.", param="action")
    selected = list(dict.fromkeys(i for i in ids if i))
    if not selected:
        return redirect(return_to, flash="Select at least one completion first.")
    if len(selected) > MAX_SELECTED:
        raise InvalidRequestError(f"Select at most {MAX_SELECTED} completions.", param="ids")
    n = len(selected)
    if action == "evaluate":
        # In the event loop: the run starts as a task of this server.
        target = _evaluate(services, eval_id, selected)
        return redirect(target, flash=f"Started an eval run over {n} completion(s).")
    if action == "distill":
        target = await run_in_threadpool(_distill, services, dataset_name, selected)
        return redirect(
            target, flash=f"Created dataset {dataset_name.strip()} from {n} completion(s)."
        )
    if action == "add":
        target = await run_in_threadpool(_add, services, dataset_id, selected)
        return redirect(target, flash=f"Added {n} completion(s): a new version was built.")
    target = await run_in_threadpool(_annotate, services, queue_name, selected)
    return redirect(target, flash=f"Created a review queue of {n} completion(s).")
