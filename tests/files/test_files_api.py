"""``/v1/files`` through the official openai SDK against a live server (SQLite + PostgreSQL)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
import openai
import pytest
from openai.types import FileObject

from tests.support.live import LiveServer


def example(i: int) -> dict[str, object]:
    return {
        "messages": [
            {"role": "system", "content": "Route the inquiry."},
            {"role": "user", "content": f"有給休暇の申請 {i}"},
            {
                "role": "assistant",
                "content": json.dumps({"category": "労務", "n": i}, ensure_ascii=False),
            },
        ]
    }


def training_bytes(n: int = 12) -> bytes:
    return "".join(json.dumps(example(i), ensure_ascii=False) + "\n" for i in range(n)).encode()


def files_dir(gateway: LiveServer) -> Path:
    return gateway.services.home / "files"  # type: ignore[attr-defined]


def stored_names(gateway: LiveServer) -> list[str]:
    d = files_dir(gateway)
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_create_list_retrieve_content_delete(client: openai.OpenAI, gateway: LiveServer) -> None:
    data = training_bytes()
    created = client.files.create(file=("train.jsonl", data), purpose="fine-tune")
    assert isinstance(created, FileObject)
    FileObject.model_validate(created.model_dump())
    assert created.id.startswith("file-")
    assert (created.filename, created.bytes, created.purpose, created.status) == (
        "train.jsonl",
        len(data),
        "fine-tune",
        "processed",
    )
    assert stored_names(gateway) == [created.id]  # by id, never by client name
    evals = client.files.create(file=("items.jsonl", b'{"item": {"q": "x"}}\n'), purpose="evals")
    assert evals.purpose == "evals"

    page = client.files.list()
    assert [f.id for f in page.data] == [evals.id, created.id]  # newest first, as OpenAI
    assert [f.id for f in client.files.list(purpose="fine-tune").data] == [created.id]
    asc = client.files.list(order="asc", limit=1)
    assert [f.id for f in asc.data] == [created.id] and asc.has_more
    assert [f.id for f in client.files.list(order="asc", after=created.id).data] == [evals.id]

    got = client.files.retrieve(created.id)
    assert got.model_dump() == created.model_dump()
    assert client.files.content(created.id).content == data

    deleted = client.files.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    assert stored_names(gateway) == [evals.id]  # the bytes are gone from disk
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\config", "config"),
        ("/abs/path/train.jsonl", "train.jsonl"),
        ("..", "upload.jsonl"),
        ("a\x00b.jsonl", "a%00b.jsonl"),  # httpx percent-encodes NUL; raw NUL: below
        ("x" * 1000 + ".jsonl", "x" * 249 + ".jsonl"),
        ("データ.jsonl", "データ.jsonl"),
    ],
)
def test_hostile_file_names_are_sanitized(
    client: openai.OpenAI, gateway: LiveServer, name: str, expected: str
) -> None:
    created = client.files.create(file=(name, training_bytes()), purpose="fine-tune")
    assert created.filename == expected
    assert stored_names(gateway) == [created.id]
    assert not (files_dir(gateway).parent / "etc").exists()


def _bad_request(
    client: openai.OpenAI, content: bytes, purpose: str = "fine-tune"
) -> dict[str, str]:
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("data.jsonl", content), purpose=purpose)  # type: ignore[arg-type]
    body = err.value.body
    assert isinstance(body, dict)
    return body


def test_bad_uploads_are_refused_and_nothing_is_stored(
    client: openai.OpenAI, gateway: LiveServer
) -> None:
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("train.jsonl", training_bytes())
    body = _bad_request(client, zipped.getvalue())
    assert body["param"] == "file" and "zip" in body["message"]
    body = _bad_request(client, b"\x00\x01\x02binary\x00" * 100, purpose="evals")
    assert "binary" in body["message"]
    body = _bad_request(client, training_bytes(3) + "経費".encode("shift_jis") + b"\n")
    assert "UTF-8" in body["message"]
    lines = training_bytes(12).splitlines()
    lines[4] = b'{"messages": [{"role": "user", "content": "x"'  # malformed JSON
    lines[7] = json.dumps({"messages": [{"role": "user", "content": "no answer"}]}).encode()
    body = _bad_request(client, b"\n".join(lines) + b"\n")
    assert body["code"] == "invalid_file_format"
    assert "line 5" in body["message"] and "invalid_json" in body["message"]
    assert "line 8" in body["message"] and "example_missing_assistant_message" in body["message"]
    body = _bad_request(client, b'["not an object"]\n', purpose="evals")
    assert "line 1" in body["message"]
    body = _bad_request(client, b"", purpose="evals")
    assert body["param"] == "file"
    # a long name is truncated (tests/reliability/test_limits.py); one beyond the 64 KiB a part's
    # headers may hold is refused
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("n" * 70_000 + ".jsonl", training_bytes()), purpose="fine-tune")
    assert err.value.body["param"] == "file"  # type: ignore[index]
    body = _bad_request(client, training_bytes(), purpose="assistants")
    assert body["param"] == "purpose"
    assert stored_names(gateway) == []
    assert client.files.list().data == []


def test_a_50_mb_line_is_a_clear_error(client: openai.OpenAI, gateway: LiveServer) -> None:
    huge = b'{"messages": [{"role": "user", "content": "' + b"a" * (50 * 1024 * 1024) + b'"}]}\n'
    body = _bad_request(client, training_bytes(2) + huge + training_bytes(10))
    assert "line_too_long" in body["message"] and "line 3" in body["message"]
    assert stored_names(gateway) == []


def test_size_limit_413(client: openai.OpenAI, gateway: LiveServer) -> None:
    gateway.services.config.files.max_file_bytes = 2000  # type: ignore[attr-defined]
    with pytest.raises(openai.APIStatusError) as err:
        client.files.create(file=("big.jsonl", training_bytes(40)), purpose="fine-tune")
    assert err.value.status_code == 413
    assert err.value.body["param"] == "file"  # type: ignore[index]
    # a body declared far beyond the limit is refused before it is read
    r = httpx.post(
        gateway.url + "/v1/files",
        files={"file": ("big.jsonl", training_bytes(400))},
        data={"purpose": "fine-tune"},
    )
    assert r.status_code == 413 and r.json()["error"]["param"] == "file"
    assert stored_names(gateway) == []


def test_warnings_are_reported_in_status_details(client: openai.OpenAI) -> None:
    created = client.files.create(file=("few.jsonl", training_bytes(3)), purpose="fine-tune")
    assert created.status == "processed"
    assert created.status_details is not None and "too_few_examples" in created.status_details


def test_missing_fields_and_not_multipart(gateway: LiveServer) -> None:
    r = httpx.post(
        gateway.url + "/v1/files", data={"purpose": "fine-tune"}, files={"other": ("x", b"y")}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = httpx.post(gateway.url + "/v1/files", files={"file": ("x.jsonl", training_bytes())})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = httpx.post(gateway.url + "/v1/files", json={"purpose": "fine-tune"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_raw_nul_and_control_bytes_in_the_multipart_file_name(gateway: LiveServer) -> None:
    boundary = "XyZ"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="../a\x00b\x07c.jsonl"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + training_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = httpx.post(
        gateway.url + "/v1/files",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["filename"] == "abc.jsonl"
    assert stored_names(gateway) == [r.json()["id"]]


def test_sanitize_filename_unit() -> None:
    from distillery.files.service import sanitize_filename

    assert sanitize_filename("..\\x/../..") == "upload.jsonl"
    assert sanitize_filename("a\x00\x1f\u202eb") == "ab"
    assert sanitize_filename(None) == "upload.jsonl"
    assert len(sanitize_filename("y" * 300)) == 255
