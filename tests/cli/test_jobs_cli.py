"""``distillery jobs create|list|show|follow|cancel`` and ``distillery worker`` as subprocesses.

Jobs train at the fake provider, run by a ``distillery worker`` process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.ft import EXAMPLES, jsonl

DISTILLERY = str(Path(sys.executable).parent / "distillery")


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DISTILLERY_HOME": str(home),
        "FAKE_OPENAI_KEY": "sk-test-secret-value-123456",
    }


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([DISTILLERY, *args], env=_env(home), capture_output=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


@pytest.fixture
def cli_home(home: Path, fake_openai: FakeOpenAI) -> Path:
    write_config(home, fake_openai)
    cli(home, "db", "upgrade")  # migrate once, before processes open the database together
    return home


@pytest.fixture
def worker(cli_home: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [DISTILLERY, "worker", "--poll", "0.1"], env=_env(cli_home), stdout=log, stderr=log
    )
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    log.close()
    print((tmp_path / "worker.log").read_text())  # shown when the test fails


def test_jobs_create_follow_show_list(
    cli_home: Path, tmp_path: Path, worker: subprocess.Popen[bytes]
) -> None:
    train = tmp_path / "train.jsonl"
    train.write_bytes(jsonl())
    job = json.loads(
        cli(
            cli_home, "jobs", "create", "--model", "gpt-4o", "--training-file", str(train),
            "--suffix", "cli", "--n-epochs", "2", "--metadata", "team=support", "--json",
        ).stdout
    )  # fmt: skip
    assert job["object"] == "fine_tuning.job" and job["status"] == "validating_files"
    assert job["training_file"].startswith("file-")  # the local path was uploaded
    assert job["hyperparameters"]["n_epochs"] == 2 and job["metadata"] == {"team": "support"}

    followed = cli(cli_home, "jobs", "follow", job["id"], "--json")
    done = json.loads(followed.stdout)
    assert followed.returncode == 0 and done["status"] == "succeeded"
    assert done["fine_tuned_model"].startswith("ft:gpt-4o:org-fake:cli:")

    shown = json.loads(cli(cli_home, "jobs", "show", job["id"], "--json").stdout)
    assert shown["id"] == job["id"] and len(shown["checkpoints"]) == 2
    assert shown["events"] and shown["events"][0]["object"] == "fine_tuning.job.event"
    human = cli(cli_home, "jobs", "show", job["id"]).stdout.decode()
    assert "succeeded" in human and "checkpoints" in human
    listed = json.loads(cli(cli_home, "jobs", "list", "--json").stdout)
    assert [j["id"] for j in listed] == [job["id"]]
    models = json.loads(cli(cli_home, "models", "list", "--json").stdout)
    assert done["fine_tuned_model"] in [m["id"] for m in models]

    # a job that fails: follow exits 1 and says why
    failing = json.loads(
        cli(
            cli_home, "jobs", "create", "--model", "fail-500", "--training-file",
            job["training_file"], "--json",
        ).stdout
    )  # fmt: skip
    followed = cli(cli_home, "jobs", "follow", failing["id"], check=False)
    assert followed.returncode == 1
    assert b"failed" in followed.stdout and b"scripted failure" in followed.stdout


def test_jobs_cancel_and_errors(cli_home: Path, tmp_path: Path) -> None:
    few = tmp_path / "few.jsonl"
    few.write_bytes(jsonl(EXAMPLES[:10]))
    job = json.loads(
        cli(
            cli_home, "jobs", "create", "--model", "smollm2-135m-instruct", "--training-file",
            str(few), "--option", "max_length=64", "--option", "lora_r=4", "--json",
        ).stdout
    )  # fmt: skip
    assert job["hyperparameters"] == {
        "n_epochs": 10,
        "batch_size": 4,
        "learning_rate_multiplier": 1.77,  # LoRA at batch 4: 2.5 x sqrt(4 / 8)
    }
    cancelled = json.loads(cli(cli_home, "jobs", "cancel", job["id"], "--json").stdout)
    assert cancelled["status"] == "cancelled"
    followed = cli(cli_home, "jobs", "follow", job["id"], check=False)
    assert followed.returncode == 1 and b"cancelled" in followed.stdout

    bad = cli(
        cli_home, "jobs", "create", "--model", "nope", "--training-file", str(few), check=False
    )
    assert bad.returncode == 2 and b"not available for fine-tuning" in bad.stderr
    bad = cli(
        cli_home, "jobs", "create", "--model", "gpt-4o", "--training-file", str(few),
        "--suffix", "x" * 65, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and b"suffix" in bad.stderr
    queued = json.loads(
        cli(
            cli_home, "jobs", "create", "--model", "gpt-4o", "--training-file", str(few), "--json"
        ).stdout
    )
    waited = cli(cli_home, "jobs", "follow", queued["id"], "--timeout", "1", check=False)
    assert waited.returncode == 1 and b"worker" in waited.stderr  # no worker runs here
    missing = cli(cli_home, "jobs", "show", "ftjob-nope", check=False)
    assert missing.returncode == 2
