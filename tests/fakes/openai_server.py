"""A fake OpenAI-compatible HTTP server for tests (test code only).

It speaks the real wire format. Behaviour is chosen by the model name:
- ``echo-*``: answers ``echo: <last user message>``;
- ``json-*``: answers a JSON object ``{"answer": "<last user message>"}``;
- ``fail-400`` / ``fail-401`` / ``fail-404`` / ``fail-500``: upstream errors;
- ``slow-<ms>``: sleeps before answering (timeouts);
anything else behaves like ``echo``. Requests received are kept in ``FakeOpenAI.requests``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse


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
        self.app = self._build()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def answer(self, body: dict[str, Any]) -> str:
        model = body.get("model", "")
        text = _last_user(body)
        if model.startswith("json-"):
            return orjson.dumps({"answer": text}).decode()
        return f"echo: {text}"

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

        return app

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
