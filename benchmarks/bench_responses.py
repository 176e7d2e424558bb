"""Responses API hot path: the time ``POST /v1/responses`` adds (proxied to an upstream's
``/v1/responses``, ``store`` on by default, durable), beside the chat-completions path of the same
gateway, in one run against the canned upstream called directly.

Usage: python benchmarks/bench_responses.py [--quick]
Anchor: the gateway's own chat-completions path (bench_gateway.py; LiteLLM adds 7.9 ms p50).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_gateway import BODY, _port, _run_gateway, _run_upstream, _wait, latency

RESPONSES_BODY = {
    "model": "bench",
    "instructions": "Route the inquiry.",
    "input": "有給休暇の申請方法を教えてください。",
    "metadata": {"prompt": "router", "prompt_version": "v1"},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 200 if args.quick else 2000
    up_port, gw_port = _port(), _port()
    home = tempfile.mkdtemp(prefix="bench-responses-")
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_run_upstream, args=(up_port,), daemon=True),
        ctx.Process(target=_run_gateway, args=(gw_port, up_port, home), daemon=True),
    ]
    for p in procs:
        p.start()
    try:
        up, gw = f"http://127.0.0.1:{up_port}/v1", f"http://127.0.0.1:{gw_port}/v1"
        _wait(f"http://127.0.0.1:{up_port}/")
        _wait(f"http://127.0.0.1:{gw_port}/health")
        rows = []
        for label, path, body in (
            ("chat completions", "chat/completions", BODY),
            ("responses", "responses", RESPONSES_BODY),
        ):
            for stream in (False, True):
                direct = statistics.median(latency(f"{up}/{path}", n, stream, body))
                through = statistics.median(latency(f"{gw}/{path}", n, stream, body))
                what = "p50 time to first bytes, streaming" if stream else "p50 latency"
                rows.append((f"{label}: {what}", direct, through))
        print("| measure | upstream direct | through gateway (stored) | added |")
        print("|---|---|---|---|")
        for what, direct, through in rows:
            print(f"| {what} | {direct:.2f} ms | {through:.2f} ms | {through - direct:+.2f} ms |")
        load = os.getloadavg()[0]
        print(f"\ncpu count {os.cpu_count()}, load average {load:.1f} at the end")
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
