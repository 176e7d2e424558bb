"""Gateway hot path: added latency (p50, non-streaming, store=true, durable), throughput with
store=true, streaming time-to-first-chunk, measured side by side with the upstream called directly.

Usage: python benchmarks/bench_gateway.py [--quick]
Anchors (PRODUCT.md §4): LiteLLM proxy adds 7.9 ms p50 and serves 128 req/s per core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BODY = {
    "model": "bench",
    "messages": [
        {"role": "system", "content": "Route the inquiry."},
        {"role": "user", "content": "有給休暇の申請方法を教えてください。"},
    ],
    "store": True,
    "metadata": {"prompt": "router", "prompt_version": "v1"},
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(app: Any, port: int) -> None:
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="error",
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


def _run_upstream(port: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from upstream import app

    _serve(app, port)


def _run_gateway(port: int, upstream: int, home: str) -> None:
    os.environ["DISTILLERY_HOME"] = home
    cfg = Path(home) / "distillery.toml"
    cfg.write_text(
        f'[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:{upstream}/v1"\n'
        'models = ["bench"]\n'
    )
    os.environ["DISTILLERY_CONFIG"] = str(cfg)
    from distillery.app import create_app

    _serve(create_app(), port)


def _wait(url: str) -> None:
    for _ in range(300):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def latency(url: str, n: int, stream: bool = False, body: dict[str, Any] = BODY) -> list[float]:
    """Milliseconds per request (to the first streamed bytes with ``stream``), after a warm-up."""
    body = {**body, "stream": stream}
    out = []
    with httpx.Client(timeout=30) as c:
        for _ in range(20):
            c.post(url, json=body)
        for _ in range(n):
            t = time.perf_counter()
            if stream:
                with c.stream("POST", url, json=body) as r:
                    first = True
                    for _chunk in r.iter_raw():
                        if first:
                            out.append((time.perf_counter() - t) * 1000)
                            first = False
            else:
                c.post(url, json=body)
                out.append((time.perf_counter() - t) * 1000)
    return out


async def _throughput(url: str, seconds: float, concurrency: int) -> float:
    done = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                r = await c.post(url, json=BODY)
                if r.status_code == 200:
                    done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - t0)


def _wrk_throughput(url: str, seconds: float, concurrency: int) -> float | None:
    """Requests/s measured by ``wrk`` (C, one thread), when Debian's ``wrk`` is installed: the
    Python load generator saturates a core by itself on this 2-core machine."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        body = json.dumps(BODY, ensure_ascii=True).replace("\\", "\\\\").replace('"', '\\"')
        script.write(
            f'wrk.method = "POST"\nwrk.body = "{body}"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    try:
        out = subprocess.run(
            [wrk, "-t1", f"-c{concurrency}", f"-d{int(seconds)}s", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if found is None or non2xx is not None:
        raise RuntimeError(f"wrk failed:\n{out}")
    return float(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 200 if args.quick else 2000
    seconds = 3 if args.quick else 10
    up_port, gw_port = _port(), _port()
    home = tempfile.mkdtemp(prefix="bench-capture-")
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_run_upstream, args=(up_port,), daemon=True),
        ctx.Process(target=_run_gateway, args=(gw_port, up_port, home), daemon=True),
    ]
    for p in procs:
        p.start()
    try:
        direct = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        gateway = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        _wait(f"http://127.0.0.1:{up_port}/")
        _wait(f"http://127.0.0.1:{gw_port}/health")
        d_all = latency(direct, n)
        g_all = latency(gateway, n)
        d, g = statistics.median(d_all), statistics.median(g_all)
        d99 = statistics.quantiles(d_all, n=100)[98]
        g99 = statistics.quantiles(g_all, n=100)[98]
        ds = statistics.median(latency(direct, n // 2, stream=True))
        gs = statistics.median(latency(gateway, n // 2, stream=True))
        tput_direct = asyncio.run(_throughput(direct, seconds, 32))
        tput_gw = asyncio.run(_throughput(gateway, seconds, 32))
        wrk_direct = _wrk_throughput(direct, seconds, 32)
        wrk_gw = _wrk_throughput(gateway, seconds, 32)
        print("| measure | upstream direct | through gateway (store=true) | added |")
        print("|---|---|---|---|")
        print(f"| p50 latency, non-streaming | {d:.2f} ms | {g:.2f} ms | {g - d:+.2f} ms |")
        print(f"| p99 latency, non-streaming | {d99:.2f} ms | {g99:.2f} ms | {g99 - d99:+.2f} ms |")
        print(
            f"| p50 time to first chunk, streaming | {ds:.2f} ms | {gs:.2f} ms | {gs - ds:+.2f} ms |"
        )
        print(
            f"| throughput, 32 concurrent (load generator on the same 2 cores) | {tput_direct:.0f} req/s | {tput_gw:.0f} req/s | - |"
        )
        if wrk_direct is not None and wrk_gw is not None:
            print(
                f"| throughput, 32 connections (wrk, 1 thread) | {wrk_direct:.0f} req/s | "
                f"{wrk_gw:.0f} req/s | - |"
            )
        print(
            f"\nanchor: LiteLLM proxy +7.9 ms p50, 128 req/s per core; cpu count {os.cpu_count()}"
        )
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
