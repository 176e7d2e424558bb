"""PII redaction on the gateway's path: the time ``[capture.redaction]`` adds to a stored
exchange, side by side with the same request on the same gateway and upstream with redaction off
for its prompt, in one run; and the redactor alone, in process, per exchange (patterns, and
Japanese names with GiNZA when ``ja_ginza`` is installed).

Usage: python benchmarks/bench_redaction.py [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_gateway import BODY, _port, _run_upstream, _serve, _wait

QUESTION = (
    "経理の山本です。立替精算の件で hanako.sato@example.co.jp まで連絡ください。"
    "携帯は090-1234-5678、マイナンバーは123456789018、〒150-0002 東京都渋谷区です。"
)
PLAIN = "有給休暇の申請方法を教えてください。来月の3日から5日まで休みたいです。"


def _run_gateway(port: int, upstream: int, home: str) -> None:
    import os

    os.environ["DISTILLERY_HOME"] = home
    cfg = Path(home) / "distillery.toml"
    cfg.write_text(
        f'[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:{upstream}/v1"\n'
        'models = ["bench"]\n\n[capture.redaction]\nprompts = ["redacted"]\n'
    )
    os.environ["DISTILLERY_CONFIG"] = str(cfg)
    from distillery.app import create_app

    _serve(create_app(), port)


def _timed(client: httpx.Client, url: str, prompt: str, content: str) -> float:
    body = {
        **BODY,
        "metadata": {"prompt": prompt},
        "messages": [*BODY["messages"][:1], {"role": "user", "content": content}],
    }
    t = time.perf_counter()
    r = client.post(url, json=body)
    elapsed = (time.perf_counter() - t) * 1000
    assert r.status_code == 200, r.text
    return elapsed


def _in_process(n: int) -> dict[str, float]:
    """Milliseconds per ``Redactor.redact`` of one exchange (request + answer)."""
    from distillery.capture.redaction import Redactor
    from distillery.settings import RedactionConfig
    from distillery.store.records import NewCompletion

    def record(text: str) -> NewCompletion:
        return NewCompletion(
            id="c",
            created_at=0,
            model="bench",
            provider="up",
            status="completed",
            stream=False,
            request={"model": "bench", "messages": [{"role": "user", "content": text}]},
            response={"choices": [{"message": {"role": "assistant", "content": "承知しました"}}]},
            error=None,
            metadata=None,
        )

    out: dict[str, float] = {}
    configs = [("patterns", RedactionConfig(all=True))]
    if importlib.util.find_spec("ja_ginza") is not None:
        configs.append(("patterns + names (GiNZA)", RedactionConfig(all=True, names=True)))
    for name, config in configs:
        redactor = Redactor(config)
        for label, text in (("with PII", QUESTION), ("without PII", PLAIN)):
            rec = record(text)
            count = n if not config.names else max(20, n // 20)
            for _ in range(5):
                redactor.redact(rec)
            t = time.perf_counter()
            for _ in range(count):
                redactor.redact(rec)
            out[f"{name}, {label}"] = (time.perf_counter() - t) / count * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 300 if args.quick else 2000
    up_port, gw_port = _port(), _port()
    home = tempfile.mkdtemp(prefix="bench-redaction-")
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
        url = base + "/v1/chat/completions"
        scenarios = [
            ("off (anchor)", "plain", QUESTION),
            ("on, text with PII", "redacted", QUESTION),
            ("on, text without PII", "redacted", PLAIN),
        ]
        times: dict[str, list[float]] = {}
        with httpx.Client(timeout=60) as c:
            for _round in range(2):  # interleaved blocks: drift on a shared machine hits each alike
                for name, prompt, content in scenarios:
                    for _ in range(20):
                        _timed(c, url, prompt, content)
                    times.setdefault(name, []).extend(
                        _timed(c, url, prompt, content) for _ in range(n // 2)
                    )
        anchor = statistics.median(times["off (anchor)"])
        print("| scenario | requests | p50 | added vs off |")
        print("|---|---|---|---|")
        for name, _, _ in scenarios:
            p50 = statistics.median(times[name])
            added = "-" if name.startswith("off") else f"{p50 - anchor:+.3f} ms"
            print(f"| {name} | {len(times[name])} | {p50:.3f} ms | {added} |")
    finally:
        for p in procs:
            p.terminate()
    print("\nredactor alone, in process, per exchange:")
    for name, ms in _in_process(200 if args.quick else 1000).items():
        print(f"- {name}: {ms:.3f} ms")


if __name__ == "__main__":
    main()
