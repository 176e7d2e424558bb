"""``distillery datasets ...`` as a subprocess with DISTILLERY_HOME set."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import orjson

from tests.support.stored import insert, open_services, routing_set

EXE = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "distillery")


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISTILLERY_HOME": str(home), "COLUMNS": "200"}
    done = subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300)
    done.stderr = " ".join(done.stderr.split())  # Rich wraps long messages
    return done


def seed(home: Path) -> list[str]:
    with open_services(home, f"sqlite:///{home / 'distillery.db'}") as svc:
        return insert(svc, *routing_set(30), *routing_set(5, prompt_version="v2", prefix="b"))


def test_create_list_show_export_import(home: Path, tmp_path: Path) -> None:
    seed(home)
    r = run(
        home,
        "datasets",
        "create",
        "router",
        "-m",
        "prompt=router",
        "-m",
        "prompt_version=v1",
        "--split",
        "train=0.8,validation=0.2",
        "--training-model",
        "gpt-4o-mini",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    version = json.loads(r.stdout)
    assert version["version"] == 1 and version["stats"]["examples"] == 30

    r = run(home, "datasets", "create", "router", "-m", "prompt=router")  # human output, warning
    assert r.returncode == 0, r.stderr
    assert "version 2" in r.stdout and "prompt_version" in r.stderr

    r = run(home, "datasets", "list", "--json")
    assert [d["name"] for d in json.loads(r.stdout)] == ["router"]
    r = run(home, "datasets", "show", "router", "--version", "1", "--json")
    assert json.loads(r.stdout)["version"]["version"] == 1
    r = run(home, "datasets", "show", "router")
    assert r.returncode == 0 and "train" in r.stdout

    out = tmp_path / "train.jsonl"
    r = run(
        home,
        "datasets",
        "export",
        "router",
        str(out),
        "--version",
        "1",
        "--split",
        "train",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    lines = out.read_bytes().splitlines()
    assert (
        json.loads(r.stdout)["examples"]
        == len(lines)
        == version["stats"]["splits"]["train"]["examples"]
    )
    r = run(home, "datasets", "export", "router", "--version", "1", "--to-file")
    assert r.returncode == 0 and r.stdout.strip().startswith("file-")
    assert (home / "files" / r.stdout.strip()).read_bytes().splitlines() == lines

    r = run(home, "datasets", "import", "copy", str(out), "--split", "train=1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stats"]["examples"] == len(lines)


def test_bad_input_exit_codes(home: Path, tmp_path: Path) -> None:
    seed(home)
    r = run(home, "datasets", "create", "x", "-m", "prompt=none")
    assert r.returncode == 2 and "matches no stored completion" in r.stderr
    r = run(home, "datasets", "create", "x", "--split", "train=0.5,test=0.2")
    assert r.returncode == 2 and "sum to 1" in r.stderr
    r = run(home, "datasets", "create", "x", "-m", "prompt=router", "--strict")
    assert r.returncode == 2 and "prompt_version" in r.stderr
    bad = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad.write_bytes(orjson.dumps(good) + b"\n{oops\n" + orjson.dumps({"messages": []}) + b"\n")
    r = run(home, "datasets", "import", "x", str(bad))
    assert r.returncode == 2 and "line 2" in r.stderr and "line 3" in r.stderr
    r = run(home, "datasets", "list", "--json")
    assert json.loads(r.stdout) == []
