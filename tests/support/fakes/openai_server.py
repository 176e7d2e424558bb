"""A fake OpenAI-compatible HTTP server for tests (test code only).

It speaks the real wire format. Behaviour is chosen by the model name:
- ``echo-*``: answers ``echo: <last user message>``;
- ``json-*``: answers a JSON object ``{"answer": "<last user message>"}``;
- ``fail-400`` / ``fail-401`` / ``fail-404`` / ``fail-500``: upstream errors;
- ``slow-<ms>``: sleeps before answering (timeouts);
- ``judge-<label>``: a model grader's JSON verdict with that label (``judge-garbage``: no label);
- ``synth-*``: a deterministic teacher of synthetic data (``tests.support.fakes.teacher``);
- ``poison-*`` / ``hostile-*``: hard-to-store answers and a hostile upstream (reliability tests;
  ``poison-deep`` on ``/v1/completions`` and ``/v1/responses`` too, ``poison-deep-call`` on chat);
anything else behaves like ``echo``. Requests received are kept in ``FakeOpenAI.requests``.
Files and fine-tuning jobs (``FakeFineTuning``): a job moves validating_files -> queued ->
running -> succeeded over successive retrievals (``fail-*`` base models fail while running).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import socket
import struct
import threading
import time
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from tests.support.fakes import teacher


def _last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages", [])):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else str(c)
    return ""


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.counter = 0
        self.reuse_id: str | None = None
        self.redirected: list[dict[str, str]] = []
        self.ft = FakeFineTuning()
        self.app = self._build()
        self.ft.install(self.app)
        self.install_embeddings(self.app)
        self.install_legacy_completions(self.app)
        self.install_responses(self.app)
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def answer(self, body: dict[str, Any]) -> str:
        model = body.get("model", "")
        text = _last_user(body)
        if teacher.is_synthesis_request(body):
            return teacher.answer(body)
        if model.startswith("json-"):
            return orjson.dumps({"answer": text}).decode()
        if model == "judge-keyword":
            return self.keyword_verdict(body)
        if model.startswith("judge-"):
            return self.judge_answer(model)
        return f"echo: {text}"

    def keyword_verdict(self, body: dict[str, Any]) -> str:
        """``judge-keyword``: "pass" when the prompt it judges contains ``OK``, else "fail"."""
        text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        label = "pass" if "OK" in text else "fail"
        return orjson.dumps({"reasoning": "keyword", "label": label, "score": 1.0}).decode()

    def judge_answer(self, model: str) -> str:
        """``judge-<label>``: a model grader's verdict ``{"reasoning", "label", "score"}`` with
        that label (score 1.0); ``judge-garbage`` answers prose that names no label."""
        label = model.removeprefix("judge-")
        if label == "garbage":
            return "I cannot decide."
        verdict = {"reasoning": f"scripted verdict {label}", "label": label, "score": 1.0}
        return orjson.dumps(verdict).decode()

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        @app.post("/openai/deployments/{deployment}/chat/completions")
        async def chat(request: Request) -> Response:
            body = orjson.loads(await request.body())
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            model = str(body.get("model") or request.path_params.get("deployment", ""))
            if model.startswith("fail-"):
                status = int(model.split("-")[1])
                return Response(
                    orjson.dumps(
                        {
                            "error": {
                                "message": f"scripted failure {status}",
                                "type": "invalid_request_error" if status < 500 else "server_error",
                                "param": "model" if status == 404 else None,
                                "code": "model_not_found" if status == 404 else None,
                            }
                        }
                    ),
                    status_code=status,
                    media_type="application/json",
                )
            if model == "poison-deep-call":
                return self.poison_call(body)
            if model.startswith("poison-"):
                return self.poison(model, body)
            if model.startswith("hostile-"):
                return self.hostile(model, body, request)
            if model.startswith("slow-"):
                await asyncio.sleep(int(model.split("-")[1]) / 1000)
            self.counter += 1
            cid = self.reuse_id or f"chatcmpl-fake{self.counter:08d}"
            text = self.answer(body)
            prompt_tokens = sum(
                len(str(m.get("content", "")).split()) for m in body.get("messages", [])
            )
            completion_tokens = len(text.split())
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            created = int(time.time())
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return StreamingResponse(
                    self._stream(cid, model, created, text, usage, include_usage),
                    media_type="text/event-stream",
                )
            data = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": usage,
                "system_fingerprint": "fp_fake",
            }
            return Response(orjson.dumps(data), media_type="application/json")

        @app.post("/v1/redirected/chat/completions")
        async def redirected(request: Request) -> Response:
            """Where ``hostile-redirect-*`` send the gateway (counts who followed)."""
            self.redirected.append(dict(request.headers))
            body = orjson.loads(await request.body())
            return self.completion(body, f"chatcmpl-redirected{len(self.redirected):04d}")

        return app

    def completion(self, body: dict[str, Any], cid: str, **extra: Any) -> Response:
        """A plain non-streamed answer to ``body`` (``extra`` replaces top-level fields)."""
        text = self.answer(body)
        data = {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            **extra,
        }
        return Response(orjson.dumps(data), media_type="application/json")

    def hostile(self, model: str, body: dict[str, Any], request: Request) -> Response:
        """Answers of a hostile or broken upstream (the reliability tests):

        - ``hostile-echo-401``: a 401 whose message echoes the bearer key it was sent;
        - ``hostile-echo-html``: a 502 HTML error page that prints the request's headers;
        - ``hostile-echo-200``: a 200 whose answer text contains the bearer key;
        - ``hostile-bad-usage``: a 200 whose ``usage`` is a list, not an object (streamed too);
        - ``hostile-tool-calls``: a 200 whose message's ``tool_calls`` is a number;
        - ``hostile-redirect-away``: a 307 to the same server under another origin
          (``localhost`` instead of ``127.0.0.1``);
        - ``hostile-redirect-same``: a 307 to another path of the same origin.
        """
        self.counter += 1
        cid = f"chatcmpl-hostile{self.counter:08d}"
        auth = request.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ")
        if model == "hostile-echo-401":
            error = {
                "message": f"Incorrect API key provided: {key}. You can find your API key at ...",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
            return Response(
                orjson.dumps({"error": error}), status_code=401, media_type="application/json"
            )
        if model == "hostile-echo-html":
            lines = "".join(f"<li>{k}: {v}</li>" for k, v in request.headers.items())
            page = f"<html><body><h1>Bad gateway</h1><ul>{lines}</ul></body></html>"
            return Response(page, status_code=502, media_type="text/html")
        if model == "hostile-echo-200":
            body = {**body, "messages": [{"role": "user", "content": f"your key is {key}"}]}
            return self.completion(body, cid)
        if model == "hostile-bad-usage" and body.get("stream"):
            head = {"id": cid, "object": "chat.completion.chunk", "created": 0, "model": model}
            delta = {"role": "assistant", "content": self.answer(body)}
            events = [
                {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": "stop"}]},
                {**head, "choices": [], "usage": [1, 2, 3]},
            ]
            data = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
            return Response(data + b"data: [DONE]\n\n", media_type="text/event-stream")
        if model == "hostile-bad-usage":
            return self.completion(body, cid, usage=[1, 2, 3])
        if model == "hostile-tool-calls":
            message = {"role": "assistant", "content": self.answer(body), "tool_calls": 5}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            return self.completion(body, cid, choices=[choice])
        path = "/v1/redirected/chat/completions"
        host = "localhost" if model == "hostile-redirect-away" else "127.0.0.1"
        return Response(status_code=307, headers={"location": f"http://{host}:{self.port}{path}"})

    async def _stream(
        self,
        cid: str,
        model: str,
        created: int,
        text: str,
        usage: dict[str, int],
        include_usage: bool,
    ):  # type: ignore[no-untyped-def]
        def event(
            delta: dict[str, Any], finish: str | None, usage_: Any = None, choices: bool = True
        ) -> bytes:
            chunk: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
                if choices
                else [],
            }
            if include_usage:
                chunk["usage"] = usage_
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        yield event({"role": "assistant", "content": ""}, None)
        words = text.split(" ")
        for i, word in enumerate(words):
            await asyncio.sleep(0)
            yield event({"content": word if i == 0 else " " + word}, None)
        yield event({}, "stop")
        if include_usage:
            yield event({}, None, usage, choices=False)
        yield b"data: [DONE]\n\n"

    def poison(self, model: str, body: dict[str, Any]) -> Response:
        """Valid answers that are hard to store (the reliability tests):

        - ``poison-deep``: ``usage`` carries a field nested 600 levels (orjson reads 1,024
          levels but writes at most 254, so it cannot be re-encoded as it is);
        - ``poison-huge``: ``usage`` counts 2**63 prompt tokens (beyond SQLite's integers).
        """
        self.counter += 1
        cid = self.reuse_id or f"chatcmpl-fake{self.counter:08d}"
        if model == "poison-deep":
            usage = b'{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"deep":'
            usage += b"[" * 600 + b"]" * 600 + b"}"
        else:
            usage = b'{"prompt_tokens":%d,"completion_tokens":1,"total_tokens":%d}' % (
                2**63,
                2**63 + 1,
            )
        text = self.answer(body)
        head = {"id": cid, "created": int(time.time()), "model": model}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            data = {
                **head,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
            body_bytes = orjson.dumps(data)[:-1] + b',"usage":' + usage + b"}"
            return Response(body_bytes, media_type="application/json")
        chunk = {**head, "object": "chat.completion.chunk"}
        delta = {"role": "assistant", "content": text}
        first = {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": "stop"}]}
        last = orjson.dumps({**chunk, "choices": []})[:-1] + b',"usage":' + usage + b"}"
        events = b"data: " + orjson.dumps(first) + b"\n\ndata: " + last + b"\n\ndata: [DONE]\n\n"
        return Response(events, media_type="text/event-stream")

    def poison_call(self, body: dict[str, Any]) -> Response:
        """``poison-deep-call``: a chat answer calling a tool whose call ``id`` is a list nested
        600 levels (streamed: in the tool call's delta)."""
        self.counter += 1
        head = {"id": f"chatcmpl-fake{self.counter:08d}", "created": int(time.time())}
        head["model"] = "poison-deep-call"
        call = {"id": "@deep@", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        deep = b"[" * 600 + b"]" * 600
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            data = {**head, "object": "chat.completion", "choices": [choice]}
            answer = orjson.dumps(data).replace(b'"@deep@"', deep)
            return Response(answer, media_type="application/json")
        chunk = {**head, "object": "chat.completion.chunk"}
        delta = {"role": "assistant", "tool_calls": [{"index": 0, **call}]}
        events = [
            {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        ]
        data = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
        data = data.replace(b'"@deep@"', deep)
        return Response(data + b"data: [DONE]\n\n", media_type="text/event-stream")

    def poison_completion(self, body: dict[str, Any]) -> Response:
        """``poison-deep`` on the legacy ``/v1/completions``: a ``text_completion`` whose
        ``usage`` carries a field nested 600 levels (streamed: on the last event)."""
        self.counter += 1
        cid = self.reuse_id or f"cmpl-fake{self.counter:08d}"
        head = {"id": cid, "object": "text_completion", "created": int(time.time())}
        head["model"] = "poison-deep"
        choice = {"text": f"echo: {body.get('prompt')}", "index": 0, "logprobs": None}
        answer = {**head, "choices": [{**choice, "finish_reason": "stop"}]}
        if not body.get("stream"):
            return Response(_with_deep_usage(answer), media_type="application/json")
        last = _with_deep_usage({**head, "choices": []})
        events = b"data: " + orjson.dumps(answer) + b"\n\ndata: " + last + b"\n\ndata: [DONE]\n\n"
        return Response(events, media_type="text/event-stream")

    def _message_item(self, text: str) -> dict[str, Any]:
        """A completed assistant message of a Response (the id numbered by ``counter``)."""
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return {
            "id": f"msg_fake{self.counter:08d}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [part],
        }

    def poison_response(self, body: dict[str, Any]) -> Response:
        """``poison-deep`` on ``/v1/responses``: a completed Response whose ``usage`` carries a
        field nested 600 levels (streamed: in ``response.completed``)."""
        self.counter += 1
        item = self._message_item(f"echo: {body.get('input')}")
        response = {
            "id": f"resp_fake{self.counter:08d}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "model": "poison-deep",
            "output": [item],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "metadata": {},
        }
        if not body.get("stream"):
            return Response(_with_deep_usage(response), media_type="application/json")
        begun = {**response, "status": "in_progress", "output": [], "usage": None}
        done = {"output_index": 0, "item": item}
        events = [
            ("response.created", orjson.dumps({"response": begun})),
            ("response.in_progress", orjson.dumps({"response": begun})),
            ("response.output_item.done", orjson.dumps(done)),
            ("response.completed", b'{"response":' + _with_deep_usage(response) + b"}"),
        ]
        chunks = [
            f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":{n},'.encode()
            + data[1:]
            + b"\n\n"
            for n, (kind, data) in enumerate(events)
        ]
        return Response(b"".join(chunks), media_type="text/event-stream")

    def install_embeddings(self, app: FastAPI) -> None:
        """``POST /v1/embeddings`` (and Azure's deployment path): a deterministic unit vector
        per input (8 floats, or ``dimensions``), base64 float32s when asked; ``fail-*`` models
        fail as on chat."""

        @app.post("/v1/embeddings")
        @app.post("/openai/deployments/{deployment}/embeddings")
        async def embeddings(request: Request) -> Response:
            body = orjson.loads(await request.body())
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            model = str(body.get("model") or request.path_params.get("deployment", ""))
            if model.startswith("fail-"):
                return _scripted_failure(int(model.split("-")[1]))
            raw = body.get("input")
            if isinstance(raw, str) or (raw and all(isinstance(t, int) for t in raw)):
                raw = [raw]
            size = int(body.get("dimensions") or 8)
            data = []
            tokens = 0
            for i, item in enumerate(raw):
                text = item if isinstance(item, str) else " ".join(map(str, item))
                tokens += len(text.split()) if isinstance(item, str) else len(item)
                digest = hashlib.sha256(text.encode()).digest()
                vector = [digest[j % len(digest)] / 255 + 0.01 for j in range(size)]
                norm = math.sqrt(sum(v * v for v in vector))
                vector = [v / norm for v in vector]
                encoded: Any = vector
                if body.get("encoding_format") == "base64":
                    encoded = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
                data.append({"object": "embedding", "index": i, "embedding": encoded})
            answer = {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
            return Response(orjson.dumps(answer), media_type="application/json")

    def install_legacy_completions(self, app: FastAPI) -> None:
        """The legacy ``POST /v1/completions`` (and Azure's): ``echo: <prompt>`` for each prompt
        and each of ``n`` choices (index ``p*n + j``), streamed when asked; ``fail-*`` fail."""

        @app.post("/v1/completions")
        @app.post("/openai/deployments/{deployment}/completions")
        async def completions(request: Request) -> Response:
            body = orjson.loads(await request.body())
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            model = str(body.get("model") or request.path_params.get("deployment", ""))
            if model.startswith("fail-"):
                return _scripted_failure(int(model.split("-")[1]))
            if model == "poison-deep":
                return self.poison_completion(body)
            prompt = body.get("prompt")
            prompts = (
                prompt
                if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int)
                else [prompt]
            )
            n = int(body.get("n") or 1)
            self.counter += 1
            cid = self.reuse_id or f"cmpl-fake{self.counter:08d}"
            created = int(time.time())
            texts = [f"echo: {p}" for p in prompts for _ in range(n)]
            prompt_tokens = sum(len(str(p).split()) for p in prompts)
            completion_tokens = sum(len(t.split()) for t in texts)
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            head = {"id": cid, "object": "text_completion", "created": created, "model": model}
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                events = []
                for i, text in enumerate(texts):
                    for j, word in enumerate(text.split(" ")):
                        piece = word if j == 0 else " " + word
                        choice = {
                            "text": piece,
                            "index": i,
                            "logprobs": None,
                            "finish_reason": None,
                        }
                        events.append({**head, "choices": [choice]})
                    done = {"text": "", "index": i, "logprobs": None, "finish_reason": "stop"}
                    events.append({**head, "choices": [done]})
                if include_usage:
                    events.append({**head, "choices": [], "usage": usage})
                data = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
                return Response(data + b"data: [DONE]\n\n", media_type="text/event-stream")
            choices = [
                {"text": text, "index": i, "logprobs": None, "finish_reason": "stop"}
                for i, text in enumerate(texts)
            ]
            answer = {**head, "choices": choices, "usage": usage, "system_fingerprint": "fp_fake"}
            return Response(orjson.dumps(answer), media_type="application/json")

    def install_responses(self, app: FastAPI) -> None:
        """OpenAI's ``POST /v1/responses`` (and Azure's): one message item answering
        ``echo: <last user input text>`` (``json-*``: the JSON answer), streamed as OpenAI's
        ``response.*`` events when asked; ``fail-*`` fail. It keeps nothing: an upstream that
        ``store: false`` asked to forget."""

        @app.post("/v1/responses")
        @app.post("/openai/deployments/{deployment}/responses")
        async def responses(request: Request) -> Response:
            body = orjson.loads(await request.body())
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            model = str(body.get("model") or request.path_params.get("deployment", ""))
            if model.startswith("fail-"):
                return _scripted_failure(int(model.split("-")[1]))
            if model == "poison-deep":
                return self.poison_response(body)
            if body.get("previous_response_id"):
                return _scripted_failure(400)  # it stores nothing to continue from
            self.counter += 1
            rid = f"resp_fake{self.counter:08d}"
            items = body.get("input")
            items = [{"role": "user", "content": items}] if isinstance(items, str) else items
            last = ""
            for item in items or []:
                if item.get("role") == "user":
                    content = item.get("content")
                    last = (
                        content
                        if isinstance(content, str)
                        else "".join(p.get("text", "") for p in content or [])
                    )
            text = self.answer({"model": model, "messages": [{"role": "user", "content": last}]})
            words = sum(len(str(i.get("content", "")).split()) for i in items or [])
            usage = {
                "input_tokens": words,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": len(text.split()),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": words + len(text.split()),
            }
            item = self._message_item(text)
            part = item["content"][0]
            response = {
                "id": rid,
                "object": "response",
                "created_at": int(time.time()),
                "status": "completed",
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"),
                "model": model,
                "output": [item],
                "parallel_tool_calls": True,
                "previous_response_id": None,
                "store": bool(body.get("store", True)),
                "temperature": body.get("temperature", 1.0),
                "text": body.get("text") or {"format": {"type": "text"}},
                "tool_choice": body.get("tool_choice", "auto"),
                "tools": body.get("tools", []),
                "top_p": body.get("top_p", 1.0),
                "truncation": "disabled",
                "usage": usage,
                "metadata": body.get("metadata") or {},
            }
            if not body.get("stream"):
                return Response(orjson.dumps(response), media_type="application/json")
            seq = iter(range(1000))

            def event(kind: str, **fields: Any) -> bytes:
                data = {"type": kind, "sequence_number": next(seq), **fields}
                return f"event: {kind}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"

            begun = {**response, "status": "in_progress", "output": [], "usage": None}
            where = {"item_id": item["id"], "output_index": 0}
            empty = {**part, "text": ""}
            chunks = [
                event("response.created", response=begun),
                event("response.in_progress", response=begun),
                event(
                    "response.output_item.added",
                    output_index=0,
                    item={**item, "status": "in_progress", "content": []},
                ),
                event("response.content_part.added", **where, content_index=0, part=empty),
            ]
            for j, word in enumerate(text.split(" ")):
                delta = word if j == 0 else " " + word
                chunks.append(
                    event(
                        "response.output_text.delta",
                        **where,
                        content_index=0,
                        delta=delta,
                        logprobs=[],
                    )
                )
            chunks += [
                event(
                    "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
                ),
                event("response.content_part.done", **where, content_index=0, part=part),
                event("response.output_item.done", output_index=0, item=item),
                event("response.completed", response=response),
            ]
            return Response(b"".join(chunks), media_type="text/event-stream")

    def start(self) -> FakeOpenAI:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started and time.time() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)


def _with_deep_usage(data: dict[str, Any]) -> bytes:
    """``data`` as JSON with a ``usage`` whose ``deep`` field nests 600 levels (orjson reads it,
    cannot write it back)."""
    usage = b'{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"deep":'
    usage += b"[" * 600 + b"]" * 600 + b"}"
    return orjson.dumps(data)[:-1] + b',"usage":' + usage + b"}"


def _scripted_failure(status: int) -> Response:
    """The error answer of a ``fail-<status>`` model."""
    error = {
        "message": f"scripted failure {status}",
        "type": "invalid_request_error" if status < 500 else "server_error",
        "param": "model" if status == 404 else None,
        "code": "model_not_found" if status == 404 else None,
    }
    return Response(
        orjson.dumps({"error": error}), status_code=status, media_type="application/json"
    )


class FakeFineTuning:
    """``/v1/files`` and ``/v1/fine_tuning/jobs`` (also under Azure's ``/openai/``)."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.checkpoints: dict[str, list[dict[str, Any]]] = {}
        self.polls: dict[str, int] = {}
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.counter = 0

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}fake{self.counter:08d}"

    def _event(self, job_id: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events[job_id].append(
            {
                "id": self._id("ftevent-"),
                "object": "fine_tuning.job.event",
                "created_at": int(time.time()),
                "level": "info",
                "message": message,
                "type": "metrics" if data else "message",
                "data": data,
            }
        )

    def _advance(self, job: dict[str, Any]) -> None:
        """One retrieval: the job moves one step along its life."""
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return
        n = self.polls[job["id"]] = self.polls.get(job["id"], 0) + 1
        jid = job["id"]
        if n == 1:
            job["status"] = "queued"
            self._event(jid, "Files validated, moving job to queued state")
        elif n == 2:
            job["status"] = "running"
            job["estimated_finish"] = int(time.time()) + 60
            self._event(jid, "Fine-tuning job started")
            if job["model"].startswith("fail-"):
                job["status"] = "failed"
                job["error"] = {"code": "scripted", "message": "scripted failure", "param": None}
                job["finished_at"] = int(time.time())
        elif n in (3, 4):
            for step in (2 * n - 5, 2 * n - 4):
                loss = 2.0 / step
                self._event(
                    jid,
                    f"Step {step}/4: training loss={loss:.3f}",
                    {
                        "step": step,
                        "total_steps": 4,
                        "train_loss": loss,
                        "train_mean_token_accuracy": 0.5 + step / 10,
                    },
                )
            step = 2 * n - 4
            self.checkpoints[jid].insert(
                0,
                {
                    "id": self._id("ftckpt-"),
                    "object": "fine_tuning.job.checkpoint",
                    "created_at": int(time.time()),
                    "fine_tuned_model_checkpoint": f"{job['_model']}:ckpt-step-{step}",
                    "fine_tuning_job_id": jid,
                    "step_number": step,
                    "metrics": {
                        "step": step,
                        "train_loss": 2.0 / step,
                        "valid_loss": 2.5 / step,
                        "valid_mean_token_accuracy": 0.6,
                    },
                },
            )
        else:
            job.update(
                status="succeeded",
                fine_tuned_model=job["_model"],
                finished_at=int(time.time()),
                trained_tokens=1234,
                estimated_finish=None,
                hyperparameters={"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 1.8},
            )
            self._event(jid, f"New fine-tuned model created: {job['_model']}")
            self._event(jid, "The job has successfully completed")

    @staticmethod
    def _page(items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
        after = request.query_params.get("after")
        limit = int(request.query_params.get("limit", 20))
        if after:
            idx = next((i for i, x in enumerate(items) if x["id"] == after), len(items))
            items = items[idx + 1 :]
        page = items[:limit]
        return {"object": "list", "data": page, "has_more": len(items) > limit}

    @staticmethod
    def _public(job: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if not k.startswith("_")}

    def install(self, app: FastAPI) -> None:
        def json(data: Any, status: int = 200) -> Response:
            return Response(orjson.dumps(data), status_code=status, media_type="application/json")

        def not_found(what: str) -> Response:
            return json(
                {
                    "error": {
                        "message": f"No such {what}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
                404,
            )

        def record(request: Request) -> None:
            self.calls.append((request.method, request.url.path, dict(request.headers)))

        @app.post("/v1/files")
        @app.post("/openai/files")
        async def upload(request: Request) -> Response:
            record(request)
            form = await request.form()
            upload = form["file"]
            content = await upload.read()  # type: ignore[union-attr]
            fid = self._id("file-")
            self.files[fid] = {
                "id": fid,
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": upload.filename,  # type: ignore[union-attr]
                "purpose": form["purpose"],
                "status": "processed",
                "_content": content,
            }
            return json(self._public(self.files[fid]))

        @app.post("/v1/fine_tuning/jobs")
        @app.post("/openai/fine_tuning/jobs")
        async def create_job(request: Request) -> Response:
            record(request)
            body = orjson.loads(await request.body())
            if body.get("training_file") not in self.files:
                return json(
                    {
                        "error": {
                            "message": "invalid training_file",
                            "param": "training_file",
                            "type": "invalid_request_error",
                            "code": None,
                        }
                    },
                    400,
                )
            jid = self._id("ftjob-")
            method = body.get("method") or {"type": "supervised", "supervised": {}}
            hyper = (method.get(method["type"]) or {}).get("hyperparameters") or {}
            self.jobs[jid] = {
                "id": jid,
                "object": "fine_tuning.job",
                "created_at": int(time.time()),
                "error": None,
                "fine_tuned_model": None,
                "finished_at": None,
                "hyperparameters": hyper,
                "model": body["model"],
                "organization_id": "org-fake",
                "result_files": [],
                "seed": body.get("seed", 7),
                "status": "validating_files",
                "trained_tokens": None,
                "training_file": body["training_file"],
                "validation_file": body.get("validation_file"),
                "estimated_finish": None,
                "integrations": [],
                "metadata": body.get("metadata"),
                "method": method,
                "_model": f"ft:{body['model']}:org-fake:{body.get('suffix') or ''}:{jid[-8:]}",
            }
            self.events[jid] = []
            self.checkpoints[jid] = []
            self._event(jid, "Validating training file")
            return json(self._public(self.jobs[jid]))

        @app.get("/v1/fine_tuning/jobs")
        @app.get("/openai/fine_tuning/jobs")
        async def list_jobs(request: Request) -> Response:
            record(request)
            wanted = {
                k[9:-1]: v for k, v in request.query_params.items() if k.startswith("metadata[")
            }
            jobs = [
                self._public(j)
                for j in reversed(self.jobs.values())
                if all((j.get("metadata") or {}).get(k) == v for k, v in wanted.items())
            ]
            return json(self._page(jobs, request))

        @app.get("/v1/fine_tuning/jobs/{job_id}")
        @app.get("/openai/fine_tuning/jobs/{job_id}")
        async def retrieve_job(job_id: str, request: Request) -> Response:
            record(request)
            job = self.jobs.get(job_id)
            if job is None:
                return not_found("job")
            self._advance(job)
            return json(self._public(job))

        @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
        @app.post("/openai/fine_tuning/jobs/{job_id}/cancel")
        async def cancel_job(job_id: str, request: Request) -> Response:
            record(request)
            job = self.jobs.get(job_id)
            if job is None:
                return not_found("job")
            if job["status"] not in ("succeeded", "failed", "cancelled"):
                job.update(status="cancelled", finished_at=int(time.time()))
                self._event(job_id, "Job cancelled")
            return json(self._public(job))

        @app.get("/v1/fine_tuning/jobs/{job_id}/events")
        @app.get("/openai/fine_tuning/jobs/{job_id}/events")
        async def job_events(job_id: str, request: Request) -> Response:
            record(request)
            if job_id not in self.jobs:
                return not_found("job")
            return json(self._page(list(reversed(self.events[job_id])), request))

        @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
        @app.get("/openai/fine_tuning/jobs/{job_id}/checkpoints")
        async def job_checkpoints(job_id: str, request: Request) -> Response:
            record(request)
            if job_id not in self.jobs:
                return not_found("job")
            return json(self._page(self.checkpoints[job_id], request))
