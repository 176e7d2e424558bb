"""distillery.client: the Evals API through the openai SDK, with and without the SDK's ``evals``.

Against a live distillery (SQLite and PostgreSQL): the SDK's own ``client.evals`` (which warns
from openai 3.63 on) and ``distillery.client.wrap``'s give the same objects of the SDK's types;
the wrapped one keeps working when the SDK has no ``evals`` at all, and without the SDK's model
types (then distillery's own models answer).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from typing import Any

import openai
import pytest
from openai.pagination import SyncCursorPage
from openai.types import EvalCreateResponse, EvalDeleteResponse, EvalListResponse
from openai.types.evals import RunCancelResponse, RunCreateResponse, RunRetrieveResponse
from openai.types.evals.runs import OutputItemListResponse, OutputItemRetrieveResponse

import distillery.client
from tests.evals.runs_support import wait_run
from tests.evals.test_evals_api import EXACT, FUZZY, QA, QA_SCHEMA

SDK_WARNING = (
    r"The Evals API is deprecated\. OpenAI scheduled its shutdown for November 30, 2026\. "
    r"Use Promptfoo instead\.$"
)
ANSWERS = ["4", "Paris", "勤怠システムから申請します", "green"]


def _create(evals: Any, name: str = "qa") -> Any:
    return evals.create(
        name=name,
        data_source_config={"type": "custom", "item_schema": QA_SCHEMA},
        testing_criteria=[EXACT, FUZZY],
        metadata={"team": "support"},
    )


def _rows() -> dict[str, Any]:
    content = [
        {"item": {"question": q, "answer": a}, "sample": {"output_text": out}}
        for (q, a), out in zip(QA, ANSWERS, strict=True)
    ]
    return {"type": "jsonl", "source": {"type": "file_content", "content": content}}


def _whole_loop(client: openai.OpenAI) -> dict[str, Any]:
    """Every Evals call a script makes, through ``client.evals``; what came back, summarised."""
    ev = _create(client.evals)
    second = _create(client.evals, "qa 2")
    run = client.evals.runs.create(ev.id, name="given answers", data_source=_rows())
    done = wait_run(client, ev.id, run.id)
    items = list(client.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=1))
    failed = list(client.evals.runs.output_items.list(run.id, eval_id=ev.id, status="fail"))
    one = client.evals.runs.output_items.retrieve(items[2].id, eval_id=ev.id, run_id=run.id)
    renamed = client.evals.update(ev.id, name="qa v2")
    listed = client.evals.list(limit=1)
    everything = list(listed)  # auto-pagination over the cursor
    runs = list(client.evals.runs.list(ev.id, order="desc"))
    canceled = client.evals.runs.cancel(run.id, eval_id=ev.id)
    run_deleted = client.evals.runs.delete(run.id, eval_id=ev.id)
    deleted = client.evals.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.evals.retrieve(second.id)
    return {
        "types": [type(x).__name__ for x in (ev, run, done, items[0], one, canceled, deleted)],
        "page": type(listed).__name__,
        "eval": (ev.object, ev.name, ev.metadata, ev.data_source_config.type),
        "retrieved": client.evals.retrieve(ev.id).name,
        "renamed": renamed.name,
        "counts": (done.status, done.result_counts.passed, done.result_counts.failed),
        "items": [i.datasource_item_id for i in items],
        "failed": [(i.datasource_item["question"], i.results[0].passed) for i in failed],
        "one": (one.status, one.datasource_item["answer"]),
        "listed": (len(listed.data), listed.has_more, [e.name for e in everything]),
        "runs": [r.id == run.id for r in runs],
        "canceled": canceled.status,
        "deleted": (deleted.deleted, deleted.eval_id == second.id, run_deleted.deleted),
    }


EXPECTED = {
    "types": [
        "EvalCreateResponse",
        "RunCreateResponse",
        "RunRetrieveResponse",
        "OutputItemListResponse",
        "OutputItemRetrieveResponse",
        "RunCancelResponse",
        "EvalDeleteResponse",
    ],
    "page": "SyncCursorPage[EvalListResponse]",
    "eval": ("eval", "qa", {"team": "support"}, "custom"),
    "retrieved": "qa v2",
    "renamed": "qa v2",
    "counts": ("completed", 3, 1),
    "items": [0, 1, 2, 3],
    "failed": [("Color of the sky?", False)],
    "one": ("pass", "勤怠システムから申請します"),
    "listed": (1, True, ["qa v2", "qa 2"]),
    "runs": [True],
    "canceled": "completed",
    "deleted": (True, True, True),
}


def test_sdk_evals_warn_and_work(client: openai.OpenAI) -> None:
    """The SDK's own ``client.evals`` (deprecated in openai >= 3.63) against distillery."""
    if not hasattr(openai.OpenAI, "evals"):
        pytest.skip("this openai SDK has no client.evals: distillery.client.wrap is the way")
    with pytest.warns(DeprecationWarning, match=SDK_WARNING):
        client.evals.list()
    summary = _whole_loop(client)
    assert summary == EXPECTED


def test_wrapped_evals_same_answers_no_warning(client: openai.OpenAI) -> None:
    wrapped = distillery.client.wrap(client)
    assert wrapped is client and isinstance(wrapped.evals, distillery.client.Evals)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # not even the SDK's
        summary = _whole_loop(wrapped)
    assert summary == EXPECTED
    # the SDK's types, so pydantic validation and attribute access are the SDK's
    ev = wrapped.evals.retrieve(wrapped.evals.list().data[0].id)
    assert isinstance(ev, openai.types.EvalRetrieveResponse)
    assert isinstance(wrapped.evals.list(), SyncCursorPage)


def test_wrap_works_when_the_sdk_drops_evals(
    client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later SDK without the resource: the same script, unchanged, after ``wrap``."""
    if hasattr(openai.OpenAI, "evals"):
        monkeypatch.delattr(openai.OpenAI, "evals")
    plain = openai.OpenAI(base_url=str(client.base_url), api_key="unused", max_retries=0)
    assert not hasattr(plain, "evals")
    summary = _whole_loop(distillery.client.wrap(plain))
    assert summary == EXPECTED


def test_wrapped_errors_are_the_sdks(client: openai.OpenAI) -> None:
    evals = distillery.client.wrap(client).evals
    with pytest.raises(openai.BadRequestError) as err:
        evals.create(
            data_source_config={"type": "custom", "item_schema": QA_SCHEMA},
            testing_criteria=[EXACT, EXACT],
        )
    assert err.value.body["param"] == "testing_criteria[1].name"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        evals.runs.retrieve("evalrun_missing", eval_id="eval_missing")
    with pytest.raises(ValueError, match="non-empty id"):
        evals.retrieve("")


def test_wrapped_evals_without_the_sdks_types(client: openai.OpenAI) -> None:
    """An SDK with neither ``evals`` nor its Eval types: ``EvalsObject`` answers."""
    script = f"""
import json, openai, openai.types, openai.types.evals, openai.types.evals.runs
for module in (openai.types, openai.types.evals, openai.types.evals.runs):
    for name in [n for n in dir(module) if n.startswith(("Eval", "Run", "OutputItem"))]:
        delattr(module, name)
del openai.OpenAI.evals
import distillery.client
client = distillery.client.wrap(openai.OpenAI(base_url={str(client.base_url)!r}, api_key="k"))
ev = client.evals.create(name="qa", data_source_config={{"type": "custom", "item_schema": {{}}}},
                         testing_criteria=[{json.dumps(EXACT)}])
got = client.evals.retrieve(ev.id)
print(json.dumps([type(ev).__module__, got.id == ev.id, got.name,
                  [e.id for e in client.evals.list()] == [ev.id], client.evals.delete(ev.id).deleted]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["distillery.client", True, "qa", True, True]


def test_sdk_types_are_used_when_present() -> None:
    assert distillery.client.EvalObject is EvalCreateResponse
    assert distillery.client.EvalDeleted is EvalDeleteResponse
    assert distillery.client.EvalListed is EvalListResponse
    assert distillery.client.RunCreated is RunCreateResponse
    assert distillery.client.RunRetrieved is RunRetrieveResponse
    assert distillery.client.RunCanceled is RunCancelResponse
    assert distillery.client.ItemListed is OutputItemListResponse
    assert distillery.client.ItemRetrieved is OutputItemRetrieveResponse
