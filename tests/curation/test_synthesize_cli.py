"""``distillery datasets synthesize`` and ``datasets export --lineage`` as subprocesses, with
DISTILLERY_HOME set and the fake teacher (``synth-teacher``) as the configured provider."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.fakes.teacher import RESPONSE_FORMAT
from tests.support.stored import completion, insert, open_services

from .test_synthesize_api import DESCRIPTION, SEEDS

EXE = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "distillery")


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DISTILLERY_HOME": str(home),
        "FAKE_OPENAI_KEY": "sk-test-secret-value-123456",
        "COLUMNS": "200",
    }
    done = subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300)
    done.stderr = " ".join(done.stderr.split())  # Rich wraps long messages
    return done


def synthesize(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        home,
        "datasets",
        "synthesize",
        "router",
        "--description",
        DESCRIPTION,
        "--n",
        "8",
        "--inputs-per-call",
        "6",
        *args,
    )


@pytest.fixture
def seeded(home: Path, fake_openai: FakeOpenAI) -> Path:
    """20 seeds of the routing task (billing/technical x en/ja) as dataset ``router`` v1."""
    write_config(home, fake_openai)
    records = []
    for (label, _), questions in SEEDS.items():
        for q in questions:
            answer = orjson.dumps({"reason": "seed", "category": label}).decode()
            c = completion(q, answer, metadata={"prompt": "router"}, system="Route the inquiry.")
            records.append(replace(c, request={**c.request, "response_format": RESPONSE_FORMAT}))
    with open_services(home, f"sqlite:///{home / 'distillery.db'}") as svc:
        insert(svc, *records)
    r = run(
        home,
        "datasets",
        "create",
        "router",
        "-m",
        "prompt=router",
        "--split",
        "train=0.8,validation=0.1,test=0.1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    return home


def test_dry_run_run_and_lineage_export(seeded: Path, tmp_path: Path) -> None:
    home = seeded
    r = synthesize(home, "--teacher", "synth-teacher", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    est = json.loads(r.stdout)
    assert est["object"] == "distillery.synthesis.estimate"
    assert est["requested"] == 8 and est["cells"] == 4
    assert est["labels"] == ["billing", "technical"] and est["languages"] == ["en", "ja"]
    assert est["calls"] > 8 and est["prompt_tokens"] > 0 and est["usd"] is None  # no price
    r = synthesize(home, "--teacher", "synth-teacher", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "calls" in r.stdout and "unknown price" in r.stdout
    shown = json.loads(run(home, "datasets", "show", "router", "--json").stdout)
    assert shown["latest_version"] == 1  # a dry run calls no teacher and stores nothing

    r = synthesize(home, "--teacher", "synth-teacher", "--json")
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    version = view["version"]
    assert version["version"] == 2
    report = version["stats"]["synthesis"]
    assert report["accepted"] == report["requested"] == 8
    assert report["complete"] and report["stopped"] is None
    for reason in ("duplicate_of_seed", "language_mismatch"):
        assert report["reasons"].get(reason, 0) > 0, report["reasons"]
    assert sum(report["reasons"].values()) == report["rejected"]
    assert version["stats"]["origins"]["train"]["synthetic"] == 8

    # the human summary: the new version, accepted/requested and the reasons' table
    r = synthesize(home, "--teacher", "synth-teacher", "--version", "1")
    assert r.returncode == 0, r.stderr
    assert "version 3" in r.stdout and "8/8" in r.stdout
    assert "reason" in r.stdout and "count" in r.stdout
    assert "duplicate_of_seed" in r.stdout and "language_mismatch" in r.stdout

    # the export marks the synthetic lines with --lineage, and stays OpenAI's format without it
    marked = tmp_path / "marked.jsonl"
    r = run(home, "datasets", "export", "router", str(marked), "--version", "2", "--lineage")
    assert r.returncode == 0, r.stderr
    lines = [orjson.loads(x) for x in marked.read_bytes().splitlines()]
    origins = [line["metadata"]["origin"] for line in lines]
    assert origins.count("synthetic") == 8 and origins.count("captured") > 0
    synthetic = [line for line in lines if line["metadata"]["origin"] == "synthetic"]
    assert all(line["metadata"]["completion_id"] for line in synthetic)
    plain = tmp_path / "plain.jsonl"
    r = run(home, "datasets", "export", "router", str(plain), "--version", "2")
    assert r.returncode == 0, r.stderr
    assert all("metadata" not in orjson.loads(x) for x in plain.read_bytes().splitlines())
    r = run(home, "datasets", "export", "router", "--version", "2", "--lineage", "--to-file")
    assert r.returncode == 2 and "--lineage" in r.stderr and "export to a path" in r.stderr


def test_an_unknown_teacher_fails_with_the_openai_message(seeded: Path) -> None:
    r = synthesize(seeded, "--teacher", "no-such-model")
    assert r.returncode == 2
    assert "The model `no-such-model` does not exist" in r.stderr
    r = synthesize(seeded, "--teacher", "synth-teacher", "--max-usd", "1")
    assert r.returncode == 2 and "max_usd needs a price" in r.stderr
    shown = json.loads(run(seeded, "datasets", "show", "router", "--json").stdout)
    assert shown["latest_version"] == 1
