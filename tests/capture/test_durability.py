"""What was acknowledged is durable: kill -9 the server mid-traffic, lose nothing acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from distillery.store import Store
from distillery.store.completions import CompletionsRepo

DISTILLERY = str(Path(sys.executable).parent / "distillery")


def test_kill_9_loses_no_acknowledged_completion(home: Path, fake_openai) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (home / "distillery.toml").write_text(
        f'[providers.fake]\nkind = "openai"\nbase_url = "{fake_openai.base_url}"\nmodels = ["echo-1"]\n'
    )
    env = {
        **os.environ,
        "DISTILLERY_HOME": str(home),
        "DISTILLERY_CONFIG": str(home / "distillery.toml"),
    }
    proc = subprocess.Popen(
        [DISTILLERY, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            httpx.get(url + "/health")
            break
        except httpx.HTTPError:
            assert time.time() < deadline
            time.sleep(0.2)
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def traffic(n: int) -> None:
        with httpx.Client(timeout=10) as c:
            i = 0
            while not stop.is_set() and i < 2000:
                i += 1
                try:
                    r = c.post(
                        url + "/v1/chat/completions",
                        json={
                            "model": "echo-1",
                            "store": True,
                            "metadata": {"w": str(n)},
                            "messages": [{"role": "user", "content": f"{n}-{i}"}],
                        },
                    )
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        acked.append(r.json()["id"])

    threads = [threading.Thread(target=traffic, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    while len(acked) < 200 and time.time() < deadline + 60:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 200
    store = Store.open(f"sqlite:///{home / 'distillery.db'}")
    repo = CompletionsRepo(store)
    stored = {c.id for c in repo.iterate()}
    missing = [i for i in acked if i not in stored]
    assert missing == []
    store.close()
