"""A plugin installed next to distillery works without touching ``src/distillery``.

With the echo plugin installed (``conftest.installed_plugin``), a ``distillery.toml`` names its
provider kind and trainer options; the openai SDK then talks to a live gateway: the plugin's
model answers (streamed too) and is captured, a fine-tuning job on it trains with the plugin's
trainer (chosen because it is the kind that can train that provider's models) and its model is
served at once; the CLI, a separate process, finds the plugin through its entry points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai

from distillery.app import build_services, create_app
from distillery.settings import Settings
from tests.support.ft import EXAMPLES, upload, wait_for
from tests.support.live import LiveServer

DISTILLERY = str(Path(sys.executable).parent / "distillery")
CONFIG = """
[providers.parrot]
kind = "echo"
prefix = ">> "
models = ["parrot-1"]

[training.backends.memorize]
polls_to_finish = 2
"""


def test_a_plugin_provider_and_trainer_serve_capture_and_distill(
    installed_plugin: Path, home: Path, db_url: str
) -> None:
    config = home / "distillery.toml"
    config.write_text(CONFIG, encoding="utf-8")
    services = build_services(Settings(home=home, database_url=db_url, config=config))
    server = LiveServer(create_app(services)).start()
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.create(
            model="parrot-1",
            messages=[{"role": "user", "content": "こんにちは"}],
            store=True,
            metadata={"team": "plugins"},
        )
        assert answer.choices[0].message.content == ">> こんにちは"
        streamed = client.chat.completions.create(
            model="parrot-1", messages=[{"role": "user", "content": "a b c"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == ">> a b c"
        stored = client.chat.completions.list(metadata={"team": "plugins"}).data
        assert [s.id for s in stored] == [answer.id]

        job = client.fine_tuning.jobs.create(
            model="parrot-1", training_file=upload(client), suffix="learned"
        )
        done = wait_for(client, job.id, timeout=120)
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model == f"ft:parrot-1:learned:{job.id[-8:]}"
        question, expected = EXAMPLES[0]
        learned = client.chat.completions.create(
            model=done.fine_tuned_model, messages=[{"role": "user", "content": question}]
        )
        assert learned.choices[0].message.content == expected
        assert done.fine_tuned_model in {m.id for m in client.models.list()}
        events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=50)]
        assert f"Memorised {len(EXAMPLES)} answers" in events
    finally:
        server.stop()
        services.store.close()

    env = {**os.environ, "DISTILLERY_HOME": str(home), "DISTILLERY_CONFIG": str(config)}
    env["DISTILLERY_DATABASE_URL"] = db_url
    proc = subprocess.run(
        [DISTILLERY, "models", "list", "--json"], env=env, capture_output=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode()
    listed = proc.stdout.decode()
    assert "parrot-1" in listed and done.fine_tuned_model in listed
    assert json.loads(listed)  # the CLI's JSON
