"""Import and export stored completions as JSONL.

Import accepts, per line, either a chat-completions exchange
``{"model", "messages", "response"|"completion", "metadata"?}`` (``response`` being a ChatCompletion
object, or just the assistant's text), or an OpenAI fine-tuning example ``{"messages": [..., assistant]}``
whose last assistant message becomes the response. Bad lines are reported by number and nothing
is written unless every line is valid.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from distillery import ids
from distillery.costs.prices import PriceTable
from distillery.costs.usage import Usage
from distillery.errors import InvalidRequestError
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.store.completions import CompletionsRepo
from distillery.store.records import NewCompletion, StoredCompletion
from distillery.wire.chat import recorded_exchange, validate_metadata


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def parse_line(
    line: dict[str, Any],
    *,
    default_model: str | None,
    extra_metadata: dict[str, str],
    now: int,
    prices: PriceTable | None = None,
) -> NewCompletion:
    if not (line.get("model") or default_model):
        raise ValueError("no 'model' (give one per line or --model)")
    created = int(line.get("created_at") or now)
    request, response = recorded_exchange(line, default_model=default_model, created=created)
    model = request["model"]
    metadata = {**(line.get("metadata") or {}), **extra_metadata}
    validate_metadata(metadata or None)
    usage = Usage.of(response)
    rid = line.get("id") or response.get("id")
    rid = rid if isinstance(rid, str) and rid else ids.new_id(ids.CHAT_COMPLETION)
    if not response.get("id"):  # an answer given as text: it takes the record's id
        response = {**response, "id": rid}
    return NewCompletion(
        id=rid,
        created_at=int(line.get("created_at") or response.get("created") or now),
        model=model,
        provider="import",
        status="completed",
        stream=False,
        request=request,
        response=response,
        error=None,
        metadata=metadata or None,
        prompt_tokens=usage.prompt,
        completion_tokens=usage.completion,
        cached_tokens=usage.cached,
        cost_usd=prices.price(model, usage) if prices is not None else None,
    )


def import_jsonl(
    repo: CompletionsRepo,
    lines: Iterable[bytes | str],
    *,
    default_model: str | None = None,
    metadata: dict[str, str] | None = None,
    prices: PriceTable | None = None,
    progress: ProgressCallback | None = None,
    batch: int = 500,
    skip_invalid: bool = False,
) -> ImportReport:
    """All-or-nothing: with any invalid line nothing is written, unless ``skip_invalid``."""
    report_ = ImportReport()
    records: list[NewCompletion] = []
    now = int(time.time())
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
            if not isinstance(line, dict):
                raise ValueError("each line must be a JSON object")
            records.append(
                parse_line(
                    line,
                    default_model=default_model,
                    extra_metadata=metadata or {},
                    now=now,
                    prices=prices,
                )
            )
        except (orjson.JSONDecodeError, ValueError, InvalidRequestError) as exc:
            msg = exc.message if isinstance(exc, InvalidRequestError) else str(exc)
            report_.errors.append(f"line {number}: {msg}")
    if report_.errors and not skip_invalid:
        return report_
    seen: set[str] = set()
    unique: list[NewCompletion] = []
    for rec in records:
        if rec.id in seen or repo.exists(rec.id):
            rec = NewCompletion(**{**rec.__dict__, "id": ids.new_id(ids.CHAT_COMPLETION)})
        seen.add(rec.id)
        unique.append(rec)
    for start in range(0, len(unique), batch):
        chunk = unique[start : start + batch]
        repo.insert_many(chunk)
        report_.imported += len(chunk)
        report_.ids.extend(r.id for r in chunk)
        report(progress, ProgressEvent("import", report_.imported, len(unique)))
    return report_


def export_lines(
    completions: Iterable[StoredCompletion], *, fmt: str = "completions"
) -> Iterator[bytes]:
    """``completions``: ChatCompletion objects with the request; ``finetune``: training examples."""
    for c in completions:
        if fmt == "finetune":
            choices = (c.response or {}).get("choices") or []
            if not choices:
                continue
            message = dict(choices[0].get("message") or {})
            assistant = {
                k: v
                for k, v in message.items()
                if k in ("role", "content", "tool_calls") and v is not None
            }
            line: dict[str, Any] = {"messages": [*c.messages, assistant]}
            if c.request.get("tools"):
                line["tools"] = c.request["tools"]
        else:
            line = {**c.to_chat_completion(), "request": c.request}
        yield orjson.dumps(line) + b"\n"
