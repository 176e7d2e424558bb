"""What the database refuses is rewritten; a reused stream id is rewritten event by event."""

from __future__ import annotations

import orjson

from distillery.capture.storable import MAX_DEPTH, TOO_DEEP, storable, token_count
from distillery.capture.streaming import IdRewriter
from distillery.store.records import NewCompletion


def test_storable_rewrites_only_what_cannot_be_stored() -> None:
    deep: object = []
    for _ in range(1000):
        deep = [deep]
    record = NewCompletion(
        id="chatcmpl-x",
        created_at=1,
        model="m",
        provider="p",
        status="completed",
        stream=False,
        request={"messages": [{"role": "user", "content": "a\u0000b", "x": deep}]},
        response={"usage": {"prompt_tokens": 2**70}, "ok": "日本語"},
        error=None,
        metadata={"k\u0000": "v"},
        prompt_tokens=2**63,
        completion_tokens=5,
        latency_ms=float("nan"),
    )
    fixed = storable(record)
    orjson.dumps(fixed.request)  # encodable now
    message = fixed.request["messages"][0]
    assert message["content"] == "a\ufffdb"
    node, depth = message["x"], 3
    while isinstance(node, list):
        node, depth = node[0], depth + 1
    assert node == TOO_DEEP and depth == MAX_DEPTH
    assert fixed.response == {"usage": {"prompt_tokens": float(2**70)}, "ok": "日本語"}
    assert fixed.metadata == {"k\ufffd": "v"}
    assert (fixed.prompt_tokens, fixed.completion_tokens, fixed.latency_ms) == (None, 5, None)
    assert token_count(True) is None and token_count(-1) is None and token_count(7) == 7


def test_id_rewriter_reframes_split_events() -> None:
    events = (
        b'data: {"id":"old","choices":[{"delta":{"content":"\\"old\\""}}]}\n\n'
        b": keep-alive\n\n"
        b'data: {"id":"old","choices":[]}\r\n\r\ndata: [DONE]\n\n'
    )
    rewriter = IdRewriter("old", "new")
    out = b"".join(rewriter.feed(events[i : i + 7]) for i in range(0, len(events), 7))
    out += rewriter.flush()
    payloads = [line[6:] for line in out.splitlines() if line.startswith(b"data: {")]
    assert [orjson.loads(p)["id"] for p in payloads] == ["new", "new"]
    assert b'\\"old\\"' in out and b": keep-alive" in out and out.endswith(b"data: [DONE]\n\n")
