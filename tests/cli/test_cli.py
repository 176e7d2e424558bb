"""The CLI as a subprocess: keys, completions import/list/show/export, serve with auth, models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

DISTILLERY = str(Path(sys.executable).parent / "distillery")


def run(
    home: Path, *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "DISTILLERY_HOME": str(home)}
    proc = subprocess.run(
        [DISTILLERY, *args], env=env, input=input, capture_output=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


def test_keys_create_list_revoke(home: Path) -> None:
    out = json.loads(run(home, "keys", "create", "--scope", "ingest", "--json").stdout)
    assert set(out) >= {"id", "key", "scope"} and out["scope"] == "ingest"
    listed = json.loads(run(home, "keys", "list", "--json").stdout)
    assert [k["id"] for k in listed] == [out["id"]]
    assert out["key"] not in json.dumps(listed)  # only the prefix is ever shown again
    db = (home / "distillery.db").read_bytes()
    assert out["key"].encode() not in db  # stored as a hash only
    run(home, "keys", "revoke", out["id"])
    assert json.loads(run(home, "keys", "list", "--json").stdout)[0]["revoked"] is True
    bad = run(home, "keys", "create", "--scope", "superuser", check=False)
    assert bad.returncode == 2 and b"scope" in bad.stderr


def test_completions_import_list_show_export(home: Path, tmp_path: Path) -> None:
    lines = [
        {
            "messages": [
                {"role": "system", "content": "route"},
                {"role": "user", "content": "有給の残り日数は？"},
                {"role": "assistant", "content": '{"category": "労務"}'},
            ],
            "metadata": {"prompt": "router"},
        },
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "VPN is down"}],
            "response": '{"category": "情報システム"}',
            "metadata": {"prompt": "router"},
        },
    ]
    src = tmp_path / "in.jsonl"
    src.write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8"
    )
    rep = json.loads(
        run(home, "completions", "import", str(src), "--model", "gpt-4o", "--json").stdout
    )
    assert rep == {"imported": 2, "errors": []}
    listed = json.loads(run(home, "completions", "list", "-m", "prompt=router", "--json").stdout)
    assert len(listed) == 2
    shown = json.loads(run(home, "completions", "show", listed[0]["id"], "--json").stdout)
    assert shown["choices"][0]["message"]["content"] == '{"category": "情報システム"}'
    out = tmp_path / "ft.jsonl"
    run(home, "completions", "export", str(out), "--format", "finetune", "-m", "prompt=router")
    exported = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert exported[0]["messages"][-1] == {"role": "assistant", "content": '{"category": "労務"}'}
    # a bad file: line numbers, nothing imported
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"messages": [{"role": "user", "content": "x"}], "response": "y"}\n{oops\n[1]\n'
    )
    proc = run(home, "completions", "import", str(bad), "--model", "m", "--json", check=False)
    assert proc.returncode == 2
    rep = json.loads(proc.stdout)
    assert rep["imported"] == 0 and [e.split(":")[0] for e in rep["errors"]] == ["line 2", "line 3"]
    assert len(json.loads(run(home, "completions", "list", "--json").stdout)) == 2
    partial = json.loads(
        run(
            home, "completions", "import", str(bad), "--model", "m", "--skip-invalid", "--json"
        ).stdout
    )
    assert partial["imported"] == 1 and len(partial["errors"]) == 2
    assert len(json.loads(run(home, "completions", "list", "--json").stdout)) == 3
    missing = run(home, "completions", "show", "chatcmpl-missing", check=False)
    assert (
        missing.returncode == 2
        and b"No chat completion" in missing.stderr
        and b"Traceback" not in missing.stderr
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(home: Path, fake_openai):  # type: ignore[no-untyped-def]
    port = _free_port()
    (home / "distillery.toml").write_text(
        f"""
[server]
auth = true
[providers.fake]
kind = "openai"
base_url = "{fake_openai.base_url}"
api_key_env = "FAKE_KEY"
models = ["echo-1"]
"""
    )
    env = {
        **os.environ,
        "DISTILLERY_HOME": str(home),
        "DISTILLERY_CONFIG": str(home / "distillery.toml"),
        "FAKE_KEY": "sk-upstream-secret-abcdef123456",
    }
    log = (home / "serve.log").open("wb")
    proc = subprocess.Popen(
        [DISTILLERY, "serve", "--port", str(port), "--log-level", "info"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError((home / "serve.log").read_text())
    yield url, env
    proc.terminate()
    proc.wait(timeout=20)


def test_serve_with_auth_scopes(home: Path, served) -> None:  # type: ignore[no-untyped-def]
    url, _env = served
    admin = json.loads(run(home, "keys", "create", "--scope", "admin", "--json").stdout)["key"]
    ingest = json.loads(run(home, "keys", "create", "--scope", "ingest", "--json").stdout)["key"]
    anon = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anon.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "x"}])
    ing = openai.OpenAI(base_url=url + "/v1", api_key=ingest, max_retries=0)
    r = ing.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "x"}], store=True
    )
    with pytest.raises(openai.PermissionDeniedError):
        ing.chat.completions.list()
    adm = openai.OpenAI(base_url=url + "/v1", api_key=admin, max_retries=0)
    assert [c.id for c in adm.chat.completions.list()] == [r.id]
    assert httpx.get(url + "/health").status_code == 200  # no auth
    # secrets never reach the log or the database in clear
    log = (home / "serve.log").read_text()
    assert "sk-upstream-secret" not in log and admin not in log and ingest not in log
    db = b"".join(p.read_bytes() for p in home.glob("distillery.db*"))
    assert b"sk-upstream-secret" not in db and admin.encode() not in db


def test_serve_refuses_a_public_address_without_keys(home: Path) -> None:
    proc = run(home, "serve", "--host", "0.0.0.0", "--port", "1", check=False)
    assert proc.returncode != 0
    assert b"refusing to serve on 0.0.0.0 without authentication" in proc.stderr
