"""``distillery annotations ...`` as a subprocess with DISTILLERY_HOME set."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support.stored import insert, open_services, routing_set

EXE = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "distillery")


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISTILLERY_HOME": str(home), "COLUMNS": "200"}
    done = subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300)
    done.stderr = " ".join(done.stderr.split())  # Rich wraps long messages
    return done


def test_create_next_submit_and_a_dataset_with_the_correction(home: Path, tmp_path: Path) -> None:
    with open_services(home, f"sqlite:///{home / 'distillery.db'}") as svc:
        ids = insert(svc, *routing_set(12))
    r = run(
        home,
        "annotations",
        "create",
        "review",
        "-m",
        "prompt=router",
        "--priority",
        "oldest",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    queue = json.loads(r.stdout)
    assert queue["counts"]["pending"] == 12
    r = run(home, "annotations", "list", "--json")
    assert json.loads(r.stdout)[0]["id"] == queue["id"]

    r = run(home, "annotations", "next", queue["id"], "--reviewer", "alice", "--json")
    item = json.loads(r.stdout)
    assert item["completion_id"] == ids[0] and item["claimed_by"] == "alice"
    r = run(home, "annotations", "next", queue["id"], "--reviewer", "bob")
    assert r.returncode == 0 and "[assistant]" in r.stdout

    fixed = tmp_path / "fixed.txt"
    fixed.write_text('{"reason": "修正", "category": "経理"}', encoding="utf-8")
    args = ["annotations", "submit", queue["id"], item["id"], "--version", str(item["version"])]
    r = run(
        home,
        *args,
        "--output-file",
        str(fixed),
        "--rating",
        "2",
        "--tag",
        "label",
        "--accept",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "accepted"
    r = run(home, *args, "--rating", "5")  # the same, stale, version again
    assert r.returncode == 2 and "version" in r.stderr

    r = run(
        home, "datasets", "create", "router", "-m", "prompt=router", "--split", "train=1", "--json"
    )
    stats = json.loads(r.stdout)["stats"]
    assert stats["corrected"] == 1
    out = tmp_path / "train.jsonl"
    run(home, "datasets", "export", "router", str(out))
    assert '"category": "経理"'.replace(" ", "") in out.read_text(encoding="utf-8").replace(
        " ", ""
    ).replace('\\"', '"')


def test_empty_queue_exit_code(home: Path) -> None:
    with open_services(home, f"sqlite:///{home / 'distillery.db'}") as svc:
        insert(svc, *routing_set(1))
    r = run(home, "annotations", "create", "q", "--json")
    queue = json.loads(r.stdout)
    assert run(home, "annotations", "next", queue["id"], "--reviewer", "a").returncode == 0
    r = run(home, "annotations", "next", queue["id"], "--reviewer", "b", "--json")
    assert r.returncode == 3 and r.stdout.strip() == "null"
    r = run(home, "annotations", "create", "q2", "--model", "nothing")
    assert r.returncode == 2 and "matches no stored completion" in r.stderr
