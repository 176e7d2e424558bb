"""A fake vLLM / SGLang server for tests (test code only).

OpenAI-compatible ``/v1/chat/completions`` (streamed and not) and ``/v1/models`` for the base
models it serves, plus the runtime LoRA API: vLLM's ``POST /v1/load_lora_adapter`` and
``/v1/unload_lora_adapter`` (SGLang's ``/load_lora_adapter`` and ``/unload_lora_adapter`` with
``flavor="sglang"``), with the answers vLLM gives (400 for an adapter loaded twice or a path
without ``adapter_config.json``, 404 for an unknown one, 400 beyond ``max_loras``). Without
``runtime_lora`` those endpoints do not exist (404), as on a server started without
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``. A request for a model that is neither a base nor a loaded
adapter is vLLM's 404. Answers say which model answered: ``<model>: <last user message>``.
Loaded adapters (name -> path) are in ``loaded``; every load and unload in ``calls``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from tests.support.live import LiveServer


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _error(message: str, status: int, err_type: str) -> Response:
    body = {"error": {"message": message, "type": err_type, "param": None, "code": status}}
    return _json(body, status)


class FakeVLLM:
    def __init__(
        self,
        served: list[str],
        *,
        flavor: str = "vllm",
        runtime_lora: bool = True,
        max_loras: int = 8,
    ) -> None:
        self.served = served
        self.flavor = flavor
        self.max_loras = max_loras
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []  # ("load" | "unload", lora_name)
        self.requests: list[dict[str, Any]] = []
        self.app = FastAPI()
        self._install_openai()
        if runtime_lora:
            self._install_lora("/v1" if flavor == "vllm" else "")
        self.server = LiveServer(self.app)

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/v1"

    def start(self) -> FakeVLLM:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def forget_all(self) -> None:
        """As after a server restart: no adapter loaded."""
        self.loaded.clear()

    def _install_lora(self, prefix: str) -> None:
        app = self.app

        @app.post(f"{prefix}/load_lora_adapter")
        async def load(request: Request) -> Response:
            body = await request.json()
            name, path = body.get("lora_name"), body.get("lora_path")
            if not name or not path:
                return _error("lora_name and lora_path are required", 400, "BadRequestError")
            if name in self.loaded:
                message = f"The lora adapter '{name}' has already been loaded."
                return _error(message, 400, "InvalidUserInput")
            config = Path(path) / "adapter_config.json"
            if not config.is_file():
                return _error(f"No adapter found for {path}", 400, "BadRequestError")
            json.loads(config.read_text())
            if len(self.loaded) >= self.max_loras:
                message = f"all {self.max_loras} LoRA slots are in use"
                return _error(message, 400, "BadRequestError")
            self.loaded[name] = path
            self.calls.append(("load", name))
            return Response(f"Success: LoRA adapter '{name}' added successfully.")

        @app.post(f"{prefix}/unload_lora_adapter")
        async def unload(request: Request) -> Response:
            body = await request.json()
            name = body.get("lora_name")
            if name not in self.loaded:
                message = f"The lora adapter '{name}' cannot be found."
                return _error(message, 404, "NotFoundError")
            del self.loaded[name]
            self.calls.append(("unload", name))
            return Response(f"Success: LoRA adapter '{name}' removed successfully.")

    def _install_openai(self) -> None:
        app = self.app

        @app.get("/v1/models")
        async def models() -> Response:
            data = [
                {"id": m, "object": "model", "owned_by": "vllm", "root": f"/models/{m}"}
                for m in self.served
            ]
            data += [
                {
                    "id": n,
                    "object": "model",
                    "owned_by": "vllm",
                    "root": p,
                    "parent": self.served[0],
                }
                for n, p in self.loaded.items()
            ]
            return _json({"object": "list", "data": data})

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            model = body.get("model")
            if model not in self.served and model not in self.loaded:
                return _error(f"The model `{model}` does not exist.", 404, "NotFoundError")
            text = ""
            for m in reversed(body.get("messages", [])):
                if m.get("role") == "user":
                    text = str(m.get("content"))
                    break
            answer = f"{model}: {text}"
            cid, created = f"chatcmpl-{len(self.requests)}", int(time.time())
            usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
            if not body.get("stream"):
                message = {"role": "assistant", "content": answer}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                return _json(
                    {
                        "id": cid,
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "choices": [choice],
                        "usage": usage,
                    }
                )

            def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
                event = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    **extra,
                }
                return b"data: " + orjson.dumps(event) + b"\n\n"

            async def events() -> Any:
                yield chunk({"role": "assistant", "content": ""}, None)
                for i, word in enumerate(answer.split(" ")):
                    yield chunk({"content": (" " if i else "") + word}, None)
                include = (body.get("stream_options") or {}).get("include_usage")
                yield chunk({}, "stop", **({"usage": usage} if include else {}))
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
