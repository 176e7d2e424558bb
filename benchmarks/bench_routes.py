"""Routes on the gateway's hot path: the time a route's decision adds, side by side with the
same request on the same gateway and upstream without a route, in one run.

Scenarios (each a different ``prompt`` metadata value, so each request meets one route):
- no route (the anchor);
- a route in ``off`` mode (the teacher answers: lookup and outcome only);
- a ``canary`` at 50 % to a student on the same upstream (the student's answers are timed);
- ``full`` with a blocking ``json_schema`` grader (grading on the path);
- ``shadow`` to a student that takes 50 ms: the teacher's latency must not include it.

Usage: python benchmarks/bench_routes.py [--quick]
Bar (PRODUCT.md §4): at most 0.1 ms added at p50; shadow adds nothing to the teacher's latency.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_gateway import BODY, _port, _run_upstream, _serve, _wait

SCHEMA = {
    "type": "object",
    "properties": {"reason": {"type": "string"}, "category": {"type": "string"}},
    "required": ["reason", "category"],
}


def _run_gateway(port: int, upstream: int, home: str) -> None:
    import os

    os.environ["DISTILLERY_HOME"] = home
    cfg = Path(home) / "distillery.toml"
    cfg.write_text(
        f'[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:{upstream}/v1"\n'
        'models = ["bench", "bench-student", "bench-slow"]\n'
    )
    os.environ["DISTILLERY_CONFIG"] = str(cfg)
    from distillery.app import create_app

    _serve(create_app(), port)


ROUTES: list[dict[str, Any]] = [
    {"name": "off", "student": "bench-student", "mode": "off"},
    {"name": "canary", "student": "bench-student", "mode": "canary", "percent": 50},
    {
        "name": "full-graded",
        "student": "bench-student",
        "mode": "full",
        "graders": [{"type": "json_schema", "name": "schema", "schema": SCHEMA, "blocking": True}],
    },
    {
        "name": "shadow",
        "student": "bench-slow",
        "mode": "shadow",
        "shadow": {"max_concurrency": 64, "max_queue": 100_000},
    },
]


def _timed(client: httpx.Client, url: str, prompt: str, i: int) -> tuple[float, str]:
    body = {
        **BODY,
        "metadata": {"prompt": prompt},
        "messages": [*BODY["messages"][:1], {"role": "user", "content": f"質問 {i}"}],
    }
    t = time.perf_counter()
    r = client.post(url, json=body)
    elapsed = (time.perf_counter() - t) * 1000
    assert r.status_code == 200, r.text
    return elapsed, r.headers.get("x-distillery-served-by", "none")


def _decision_cost(n: int = 200_000) -> float:
    """Microseconds per ``RouteTable.match`` + ``Route.to_student`` on a table of 50 routes."""
    from distillery.routing.table import RouteTable, build_route
    from distillery.store.routes import RouteRecord

    table = RouteTable()
    records = [
        RouteRecord(
            id=f"route_{i}",
            name=f"r{i}",
            created_at=0,
            updated_at=0,
            mode="canary",
            version=1,
            body={
                "name": f"r{i}",
                "match": {"model": "bench", "metadata": {"prompt": f"p{i}"}},
                "student": "bench-student",
                "mode": "canary",
                "percent": 30,
                "sticky_key": "user",
            },
        )
        for i in range(50)
    ]
    table.replace([build_route(r, lambda cfg, param: None) for r in records])  # type: ignore[arg-type, return-value]
    metadata = {"prompt": "p49", "user": "u123"}
    upstream = {"model": "bench", "messages": BODY["messages"]}
    t = time.perf_counter()
    for _ in range(n):
        route = table.match("bench", metadata)
        assert route is not None
        route.to_student(metadata, upstream)
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 300 if args.quick else 3000
    up_port, gw_port = _port(), _port()
    home = tempfile.mkdtemp(prefix="bench-routes-")
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_run_upstream, args=(up_port,), daemon=True),
        ctx.Process(target=_run_gateway, args=(gw_port, up_port, home), daemon=True),
    ]
    for p in procs:
        p.start()
    try:
        base = f"http://127.0.0.1:{gw_port}"
        _wait(f"http://127.0.0.1:{up_port}/")
        _wait(base + "/health")
        with httpx.Client(timeout=60) as c:
            for route in ROUTES:
                spec = {
                    **route,
                    "match": {"model": "bench", "metadata": {"prompt": route["name"]}},
                    "force": True,
                }
                r = c.post(base + "/v1/distillery/routes", json=spec)
                assert r.status_code == 200, r.text
            url = base + "/v1/chat/completions"
            scenarios = ["none", *(r["name"] for r in ROUTES)]
            times: dict[str, dict[str, list[float]]] = {s: {} for s in scenarios}
            for s in scenarios:  # one block each; the background work drains in between
                for i in range(30):
                    _timed(c, url, s, i)
                for i in range(n):
                    ms, served = _timed(c, url, s, i)
                    times[s].setdefault(served, []).append(ms)
                time.sleep(2.0 if s == "shadow" else 0.5)
        anchor = statistics.median(times["none"]["none"])
        print("| scenario | answered by | requests | p50 | added vs no route |")
        print("|---|---|---|---|---|")
        print(
            f"| no route (anchor) | teacher | {len(times['none']['none'])} | {anchor:.3f} ms | - |"
        )
        for s in scenarios[1:]:
            for served, values in sorted(times[s].items()):
                p50 = statistics.median(values)
                print(f"| {s} | {served} | {len(values)} | {p50:.3f} ms | {p50 - anchor:+.3f} ms |")
        print(f"\nshadow student latency: 50 ms (not on the teacher's path); n={n} per scenario")
        decision_us = _decision_cost()
        print(f"route decision alone, in process (match + canary bucket): {decision_us:.2f} µs")
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
