"""``distillery routes ...`` as a subprocess: create, list, the gate's refusal (exit 2 with its
reason), a forced promote, show with stats, rollback and events, JSON for scripts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import run
from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI


def test_routes_cli(home: Path, fake_openai: FakeOpenAI) -> None:
    write_config(home, fake_openai)
    created = json.loads(
        run(
            home,
            "routes", "create", "router",
            "--model", "gpt-4o", "--student", "echo-1",
            "-m", "prompt=router", "--prompt-version", "c0ffee1",
            "--grader", '{"type": "valid_json", "name": "json"}',
            "--floor", "0.8",
            "--json",
        ).stdout
    )  # fmt: skip
    assert created["mode"] == "shadow"
    assert created["match"] == {
        "model": "gpt-4o",
        "metadata": {"prompt": "router"},
        "prompt_version": "c0ffee1",
    }
    assert created["rollback"]["floor"] == 0.8
    route_id = created["id"]
    listed = run(home, "routes", "list").stdout.decode()
    assert "router" in listed and "shadow" in listed and "echo-1" in listed
    assert [r["id"] for r in json.loads(run(home, "routes", "list", "--json").stdout)] == [route_id]

    refused = run(home, "routes", "promote", route_id, "--percent", "10", check=False)
    assert refused.returncode == 2
    assert b"parity gate refuses" in refused.stderr and b"no comparison" in refused.stderr

    promoted = json.loads(
        run(home, "routes", "promote", route_id, "--percent", "10", "--force", "--json").stdout
    )
    assert promoted["mode"] == "canary" and promoted["percent"] == 10
    shown = json.loads(run(home, "routes", "show", route_id, "--json").stdout)
    assert shown["stats"]["requests"] == 0 and shown["stats"]["mode"] == "canary"
    human = run(home, "routes", "show", route_id).stdout.decode()
    assert "canary 10%" in human and "-> echo-1" in human

    run(home, "routes", "rollback", route_id, "--reason", "error rate")
    events = json.loads(run(home, "routes", "events", route_id, "--json").stdout)
    assert [e["type"] for e in events][:2] == ["rolled_back", "mode_changed"]
    assert events[0]["actor"] == "cli" and events[0]["reason"] == "error rate"
    assert any(e["type"] == "gate_bypassed" for e in events)

    clash = run(home, "routes", "create", "again", "--model", "gpt-4o", "--student", "echo-1",
                "-m", "prompt=router", "--prompt-version", "c0ffee1", check=False)  # fmt: skip
    assert clash.returncode == 2 and b"already matches" in clash.stderr
    run(home, "routes", "delete", route_id)
    assert json.loads(run(home, "routes", "list", "--json").stdout) == []
