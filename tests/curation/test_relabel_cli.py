"""``distillery relabel`` as a subprocess with DISTILLERY_HOME set, its teachers the fake
OpenAI server: the estimate, a run whose disagreements land in a review queue, a cap, and the
errors."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.stored import insert, open_services

from .test_relabel_api import BOTH, inquiries

EXE = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "distillery")


@pytest.fixture
def cli_home(home: Path, fake_openai: FakeOpenAI) -> Path:
    """A home with the fake provider configured and the ten inquiries stored."""
    write_config(home, fake_openai)
    with open_services(home, f"sqlite:///{home / 'distillery.db'}") as svc:
        insert(svc, *inquiries())
    return home


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DISTILLERY_HOME": str(home),
        "DISTILLERY_CONFIG": str(home / "distillery.toml"),
        "FAKE_OPENAI_KEY": "sk-test-secret-value-123456",
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [EXE, "relabel", *args], capture_output=True, text=True, env=env, timeout=300
    )
    done.stderr = " ".join(done.stderr.split())  # Rich wraps long messages
    return done


def test_estimate_then_relabel_into_a_review_queue(cli_home: Path, fake_openai: FakeOpenAI) -> None:
    before = len(fake_openai.requests)
    r = run(cli_home, "--teacher", "synth-strong", "-m", "prompt=router", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    estimate = json.loads(r.stdout)["estimate"]
    assert estimate["calls"] == 10 and estimate["prompt_tokens"] == 100
    r = run(cli_home, "--teacher", "synth-strong", "-m", "prompt=router", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "dry run: 10 stored input(s)" in r.stdout and "category" in r.stdout
    assert len(fake_openai.requests) == before  # no teacher was asked

    r = run(
        cli_home,
        "--teacher",
        "synth-strong",
        "--metadata",
        "prompt=router",
        "--model",
        "synth-teacher",
        "--queue",
        "crash reports",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert (result["relabelled"], result["agreed"], result["disagreed"]) == (10, 7, 3)
    assert result["queue_name"] == "crash reports"
    with open_services(cli_home, f"sqlite:///{cli_home / 'distillery.db'}") as svc:
        queue = svc.annotations.get_queue(result["queue_id"])
        assert queue.counts["pending"] == 3
        items = svc.annotations.list_items(queue.id).data
        questions = [svc.completions.get(i.completion_id).messages[-1]["content"] for i in items]
        assert questions == BOTH
        assert all('"technical"' in (i.corrected_output or "") for i in items)
        stored = svc.completions.get(result["items"][0]["relabel_id"])
        assert stored.model == "synth-strong"
        assert stored.metadata["relabel_of"] == result["items"][0]["completion_id"]
        assert stored.metadata["prompt_version"] == "v3"

    # for people: the counts, the disagreements and the queue
    ids = ",".join(i["completion_id"] for i in result["items"][:3])
    r = run(cli_home, "--teacher", "synth-strong", "--ids", ids, "--compare", "json")
    assert r.returncode == 0, r.stderr
    assert "3 disagree" in r.stdout and "review queue" in r.stdout
    assert "billing" in r.stdout and "technical" in r.stdout


def test_a_cap_and_the_errors(cli_home: Path) -> None:
    r = run(cli_home, "--teacher", "synth-strong", "-m", "prompt=router", "--max-calls", "2")
    assert r.returncode == 0, r.stderr
    assert "2 of 10 answered again" in r.stdout and "stopped: max_calls" in r.stdout

    r = run(cli_home, "--teacher", "fail-500", "--limit", "3", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["failed"] == 3

    r = run(cli_home, "--teacher", "no-such-model", "-m", "prompt=router")
    assert r.returncode == 2 and "error" in r.stderr and "no-such-model" in r.stderr
    r = run(cli_home, "--teacher", "synth-strong", "-m", "prompt=router", "--max-usd", "1")
    assert r.returncode == 2 and "max_usd" in r.stderr
    r = run(cli_home, "--teacher", "synth-strong")  # no selection: a usage error
    assert r.returncode == 2 and "--model, --metadata, --ids or --limit" in r.stderr
    r = run(cli_home, "--teacher", "synth-strong", "-m", "router")
    assert r.returncode == 2 and "key=value" in r.stderr
