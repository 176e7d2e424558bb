"""kill -9 under mixed streaming and non-streaming load: every acknowledged completion is stored.

A stream counts as acknowledged when its ``data: [DONE]`` arrived (released after the commit),
and it must be stored under the id its client saw.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from distillery.store import Store
from distillery.store.completions import CompletionsRepo

from .conftest import read_stream

DISTILLERY = str(Path(sys.executable).parent / "distillery")
CLIENTS = 8
ACKED_BEFORE_KILL = 200


def _serve(home: Path, db_url: str, fake_base_url: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (home / "distillery.toml").write_text(
        f'[providers.fake]\nkind = "openai"\nbase_url = "{fake_base_url}"\nmodels = ["echo-1"]\n'
    )
    env = {
        **os.environ,
        "DISTILLERY_HOME": str(home),
        "DISTILLERY_CONFIG": str(home / "distillery.toml"),
        "DISTILLERY_DATABASE_URL": db_url,
    }
    proc = subprocess.Popen(
        [DISTILLERY, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "/health")
            return proc, url
        except httpx.HTTPError:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)


def test_kill_9_under_mixed_load_loses_nothing(home: Path, db_url: str, fake_openai) -> None:  # type: ignore[no-untyped-def]
    proc, url = _serve(home, db_url, fake_openai.base_url)
    acked: list[tuple[str, bool]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def traffic(n: int) -> None:
        with httpx.Client(timeout=10) as http:
            i = 0
            while not stop.is_set() and i < 500:
                i += 1
                streamed = (n + i) % 2 == 0
                body = {
                    "model": "echo-1",
                    "store": True,
                    "stream": streamed,
                    "messages": [{"role": "user", "content": f"{n}-{i}"}],
                }
                try:
                    with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
                        if r.status_code != 200:
                            continue
                        if streamed:
                            cid, done = read_stream(r.iter_lines())
                        else:
                            r.read()
                            cid, done = r.json()["id"], True
                except (httpx.HTTPError, ValueError):
                    return  # the server is gone
                if done and cid:
                    with lock:
                        acked.append((cid, streamed))

    threads = [threading.Thread(target=traffic, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(acked) < ACKED_BEFORE_KILL and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    streams = sum(1 for _, s in acked if s)
    assert len(acked) >= ACKED_BEFORE_KILL and 0 < streams < len(acked)
    store = Store.open(db_url)
    try:
        stored = {c.id for c in CompletionsRepo(store).iterate()}
    finally:
        store.close()
    spooled = home / "spool" / "completions.jsonl"
    assert not spooled.exists()  # nothing went to the spool: the database was up
    missing = [cid for cid, _ in acked if cid not in stored]
    print(f"\nkill -9 figures: acked={len(acked)} streams={streams} stored={len(stored)}")
    assert missing == []
