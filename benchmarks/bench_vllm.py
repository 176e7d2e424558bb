"""The ``vllm`` provider kind on the gateway's path: what distillery adds in front of a vLLM server
for a base model and for a LoRA student (an ``ft:`` id sent as the adapter's name), side by side
with the same base through an ``openai``-kind provider and with the upstream called directly, in
one run. The upstream is a canned vLLM-like ASGI app (``/v1/models``, the runtime LoRA endpoints,
canned completions), so the figures are distillery's own cost, not a GPU's.

Scenarios (sequential requests, p50 and p90; ``store: true``, SQLite):
- direct: the canned upstream alone;
- openai kind: the base model through an ``openai`` provider (the anchor);
- vllm kind, base: the same base through the ``vllm`` provider;
- vllm kind, student: an ``ft:`` model whose adapter is loaded (renamed request and answer);
- vllm kind, student, streaming: time to first chunk (events renamed one by one);
- vllm kind, two students, one slot: alternating, so every request unloads one adapter and
  loads the other first (two extra upstream calls; a real server's load time comes on top).

Usage: python benchmarks/bench_vllm.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from bench_gateway import BODY, _port, _serve, _wait

BASE = "bench"


async def vllm_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """vLLM's model list and runtime LoRA endpoints; completions from the canned upstream."""
    from upstream import app as canned

    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/v1/models":
        data = [{"id": BASE, "object": "model", "root": f"/models/{BASE}"}]
        payload = orjson.dumps({"object": "list", "data": data})
    elif path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
        more = True
        while more:
            more = bool((await receive()).get("more_body"))
        payload = b"Success"
    else:
        await canned(scope, receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": payload})


def _run_upstream(port: int) -> None:
    _serve(vllm_app, port)


def _run_gateway(port: int, home: str) -> None:
    os.environ["DISTILLERY_HOME"] = home
    os.environ["DISTILLERY_CONFIG"] = str(Path(home) / "distillery.toml")
    from distillery.app import create_app

    _serve(create_app(), port)


def _config(home: Path, upstream: int) -> None:
    url = f"http://127.0.0.1:{upstream}/v1"
    (home / "distillery.toml").write_text(
        f'[providers.gpu]\nkind = "vllm"\nbase_url = "{url}"\nmodels = ["{BASE}"]\n'
        f'adapter_dir = "{home / "adapters"}"\nmax_adapters = 1\n\n'
        f'[providers.plain]\nkind = "openai"\nbase_url = "{url}"\nmodels = ["{BASE}-plain"]\n'
    )


def _students(home: Path) -> list[str]:
    from distillery.services import build_services
    from distillery.settings import Settings

    services = build_services(Settings(home=home, config=home / "distillery.toml"))
    ids = []
    for n in (1, 2):
        folder = home / f"adapter-{n}"
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}))
        (folder / "adapter_model.safetensors").write_bytes(os.urandom(1 << 20))
        model_id = f"ft:{BASE}:bench{n}:0000000{n}"
        services.fine_tuned_models.register(
            model_id, base_model=BASE, provider="local", adapter_path=str(folder)
        )
        ids.append(model_id)
    services.store.close()
    return ids


def _timed(client: httpx.Client, url: str, models: list[str], n: int, stream: bool) -> list[float]:
    out = []
    for i in range(n):
        body = {**BODY, "model": models[i % len(models)], "stream": stream}
        start = time.perf_counter()
        if stream:
            with client.stream("POST", url, json=body) as response:
                chunks = response.iter_raw()
                next(chunks)
                out.append(time.perf_counter() - start)
                for _ in chunks:
                    pass
        else:
            response = client.post(url, json=body)
            out.append(time.perf_counter() - start)
        assert response.status_code == 200, response.read()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 300 if args.quick else 2000
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        up, gw = _port(), _port()
        _config(home, up)
        students = _students(home)
        procs = [
            ctx.Process(target=_run_upstream, args=(up,), daemon=True),
            ctx.Process(target=_run_gateway, args=(gw, tmp), daemon=True),
        ]
        for p in procs:
            p.start()
        try:
            _wait(f"http://127.0.0.1:{up}/v1/models")
            _wait(f"http://127.0.0.1:{gw}/health")
            direct = f"http://127.0.0.1:{up}/v1/chat/completions"
            gateway = f"http://127.0.0.1:{gw}/v1/chat/completions"
            scenarios = [
                ("direct (canned vLLM-like upstream)", direct, [BASE], False),
                ("openai kind, base model (anchor)", gateway, [f"{BASE}-plain"], False),
                ("vllm kind, base model", gateway, [BASE], False),
                ("vllm kind, student (adapter loaded)", gateway, students[:1], False),
                ("direct, streaming, first chunk", direct, [BASE], True),
                ("vllm kind, base, streaming, first chunk", gateway, [BASE], True),
                ("vllm kind, student, streaming, first chunk", gateway, students[:1], True),
                ("vllm kind, two students, one slot (unload+load each)", gateway, students, False),
            ]
            rows = []
            with httpx.Client(timeout=30) as client:
                for name, url, models, stream in scenarios:
                    _timed(client, url, models, 50, stream)  # warm-up
                    times = _timed(client, url, models, n, stream)
                    q = statistics.quantiles(times, n=10)
                    rows.append((name, statistics.median(times) * 1e3, q[8] * 1e3))
        finally:
            for p in procs:
                p.terminate()
    print(f"{n} sequential requests per scenario, store: true, SQLite\n")
    print("| scenario | p50 | p90 |")
    print("|---|---|---|")
    for name, p50, p90 in rows:
        print(f"| {name} | {p50:.2f} ms | {p90:.2f} ms |")


if __name__ == "__main__":
    main()
