"""``distillery evals run|show|compare|repeat`` as subprocesses, against the fake provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI

DISTILLERY = str(Path(sys.executable).parent / "distillery")

CRITERIA = [
    {
        "type": "string_check",
        "name": "echoes",
        "input": "{{sample.output_text}}",
        "reference": "echo:",
        "operation": "like",
    },
    {"type": "valid_json", "name": "json"},
]


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "DISTILLERY_HOME": str(home),
        "FAKE_OPENAI_KEY": "sk-test-secret-value-123456",
    }
    proc = subprocess.run([DISTILLERY, *args], env=env, capture_output=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


@pytest.fixture
def cli_home(home: Path, fake_openai: FakeOpenAI, tmp_path: Path) -> Path:
    write_config(home, fake_openai)
    lines = [
        {
            "model": "echo-1",
            "messages": [{"role": "user", "content": q}],
            "response": f"echo: {q}",
            "metadata": {"prompt": "router"},
        }
        for q in ["VPN is down", "有給休暇の申請方法は？", "Need a new badge", "経費の締め日"]
    ]
    data = tmp_path / "traffic.jsonl"
    data.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), encoding="utf-8")
    cli(home, "completions", "import", str(data))
    (tmp_path / "criteria.json").write_text(json.dumps(CRITERIA), encoding="utf-8")
    return home


def _json(proc: subprocess.CompletedProcess[bytes]) -> Any:
    return json.loads(proc.stdout)


def test_evals_run_show_compare(cli_home: Path, tmp_path: Path) -> None:
    criteria = str(tmp_path / "criteria.json")
    common = ["--stored-completions", "--metadata", "prompt=router", "--criteria", criteria]
    teacher = _json(cli(cli_home, "evals", "run", *common, "--name", "router", "--json"))
    assert teacher["object"] == "eval.run" and teacher["status"] == "completed"
    assert teacher["result_counts"] == {"total": 4, "passed": 0, "failed": 4, "errored": 0}
    per = {r["testing_criteria"]: r["passed"] for r in teacher["per_testing_criteria_results"]}
    assert per == {"echoes": 4, "json": 0}

    student = _json(cli(cli_home, "evals", "run", *common, "--model", "json-1", "--json"))
    assert student["model"] == "json-1"
    per = {r["testing_criteria"]: r["passed"] for r in student["per_testing_criteria_results"]}
    assert per == {"echoes": 0, "json": 4}
    assert student["per_model_usage"][0]["invocation_count"] == 4

    shown = _json(cli(cli_home, "evals", "show", student["id"], "--items", "--json"))
    assert shown["id"] == student["id"] and len(shown["output_items"]) == 4
    human = cli(cli_home, "evals", "show", student["id"], "--items").stdout.decode()
    assert student["id"] in human and "echoes" in human

    result = _json(
        cli(
            cli_home,
            "evals",
            "compare",
            teacher["id"],
            student["id"],
            "--baseline",
            teacher["id"],
            "--json",
        )
    )
    rows = {row["name"]: row["runs"] for row in result["criteria"]}
    assert rows["echoes"][1]["percent_of_baseline"] == 0.0
    assert rows["echoes"][1]["pass_rate"] == 0.0 and rows["json"][1]["pass_rate"] == 1.0
    assert rows["json"][1]["percent_of_baseline"] is None  # the baseline passed none
    flips = result["flips"][0]  # every item failed overall in both runs, for other reasons
    assert flips["pass_to_fail"] == [] and flips["fail_to_pass"] == []
    assert len(flips["by_criterion"]["echoes"]["pass_to_fail"]) == 4
    assert len(flips["by_criterion"]["json"]["fail_to_pass"]) == 4
    table = cli(cli_home, "evals", "compare", teacher["id"], student["id"]).stdout.decode()
    assert "baseline" in table and "echoes" in table

    repeat = _json(cli(cli_home, "evals", "repeat", teacher["id"], "--json"))
    assert repeat["agreement"] == 1.0 and repeat["matched_items"] == 4

    missing = cli(cli_home, "evals", "show", "evalrun_nope", check=False)
    assert missing.returncode == 2 and b"not found" in missing.stderr


def test_evals_run_from_a_config_file(cli_home: Path, tmp_path: Path) -> None:
    config = {
        "name": "qa",
        "data_source_config": {"type": "custom", "item_schema": {"type": "object"}},
        "testing_criteria": [
            {
                "type": "string_check",
                "name": "exact",
                "input": "{{sample.output_text}}",
                "reference": "echo: {{item.q}}",
                "operation": "eq",
            }
        ],
        "data_source": {
            "type": "completions",
            "source": {
                "type": "file_content",
                "content": [{"item": {"q": "one"}}, {"item": {"q": "二"}}],
            },
            "input_messages": {
                "type": "template",
                "template": [{"role": "user", "content": "{{item.q}}"}],
            },
            "model": "echo-1",
        },
    }
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    run = _json(cli(cli_home, "evals", "run", str(path), "--json"))
    assert run["result_counts"]["passed"] == 2
    out = cli(cli_home, "evals", "run", str(path), "--model", "fail-500", check=False)
    assert out.returncode == 0 and b"errored 2" in out.stdout
    bad = cli(cli_home, "evals", "run", "--criteria", str(tmp_path / "criteria.json"), check=False)
    assert bad.returncode == 2 and b"choose one data source" in bad.stderr
