"""A streamed completion is stored under the id its client saw, even when an upstream reuses ids."""

from __future__ import annotations

import threading

import openai


def _stream(client: openai.OpenAI, text: str) -> tuple[set[str], str]:
    ids: set[str] = set()
    content = ""
    for chunk in client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": text}], store=True, stream=True
    ):
        ids.add(chunk.id)
        if chunk.choices and chunk.choices[0].delta.content:
            content += chunk.choices[0].delta.content
    return ids, content


def test_stream_reusing_a_stored_id_is_stored_under_the_id_the_client_saw(
    client: openai.OpenAI, fake_openai
) -> None:  # type: ignore[no-untyped-def]
    fake_openai.reuse_id = "chatcmpl-reused"
    try:
        first = client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "one"}], store=True
        )
        seen, content = _stream(client, "two")
        results: list[tuple[set[str], str]] = []
        threads = [
            threading.Thread(target=lambda n=n: results.append(_stream(client, f"c{n}")))
            for n in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        fake_openai.reuse_id = None
    assert first.id == "chatcmpl-reused"
    assert len(seen) == 1 and content == "echo: two"
    (sid,) = seen
    assert sid != first.id
    assert client.chat.completions.retrieve(sid).choices[0].message.content == "echo: two"
    assert client.chat.completions.retrieve(first.id).choices[0].message.content == "echo: one"
    concurrent = set()
    for ids, text in results:  # concurrent streams with one upstream id: each its own
        assert len(ids) == 1
        (cid,) = ids
        concurrent.add(cid)
        assert client.chat.completions.retrieve(cid).choices[0].message.content == text
    assert len(concurrent) == 6 and sid not in concurrent


def test_a_stream_with_a_fresh_id_passes_through_unchanged(
    client: openai.OpenAI, fake_openai
) -> None:  # type: ignore[no-untyped-def]
    seen, content = _stream(client, "plain")
    assert content == "echo: plain"
    (sid,) = seen
    assert sid.startswith("chatcmpl-fake")  # the upstream's own id, not rewritten
    assert client.chat.completions.retrieve(sid).choices[0].message.content == "echo: plain"
