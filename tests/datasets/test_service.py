"""Dataset versions from stored completions, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from distillery.datasets.split import assign, group_key, parse_ratios
from distillery.errors import ConflictError, InvalidRequestError, NotFoundError
from distillery.services import Services
from distillery.settings import Config
from tests.support.stored import completion, insert, open_services, routing_set


@pytest.fixture
def services(home: Path, db_url: str) -> Iterator[Services]:
    with open_services(
        home, db_url, Config.model_validate({"prices": {"student-x": {"training": 8.0}}})
    ) as svc:
        yield svc


ROUTER = {"source": {"metadata": {"prompt": "router"}}}


def test_version_from_metadata_filter_splits_counts_cost_and_export(
    services: Services, tmp_path: Path
) -> None:
    insert(services, *routing_set(40))
    insert(services, completion("other prompt", "x", metadata={"prompt": "other"}))
    version = services.datasets.create_version(
        "router",
        {
            **ROUTER,
            "split": {"train": 0.7, "validation": 0.15, "test": 0.15},
            "training_model": "student-x",
            "epochs": 2,
        },
    )
    stats = version.stats
    assert version.version == 1
    assert stats["examples"] == 40 and stats["selected"] == 40
    splits = stats["splits"]
    assert sum(s["examples"] for s in splits.values()) == 40
    assert splits["train"]["examples"] > splits["test"]["examples"] > 0
    assert splits["train"]["tokens"] > 0 and stats["tokens"] == sum(
        s["tokens"] for s in splits.values()
    )
    cost = stats["training_cost"]
    assert cost["epochs"] == 2 and cost["billed_tokens"] == 2 * splits["train"]["tokens"]
    assert cost["usd"] == pytest.approx(cost["billed_tokens"] * 8.0 / 1e6)
    out = tmp_path / "out" / "train.jsonl"
    n = services.datasets.export_jsonl("router", out, split="train")
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert n == len(lines) == splits["train"]["examples"]
    assert lines[0]["messages"][-1]["role"] == "assistant"
    assert set(lines[0]) == {"messages"}
    # every item of every split is where the stable hash puts it
    ratios = parse_ratios({"train": 0.7, "validation": 0.15, "test": 0.15})
    for item in services.datasets.list_items("router", limit=100).data:
        assert item.split == assign(group_key(item.example), ratios)


def test_versions_are_immutable_snapshots_and_splits_are_stable(services: Services) -> None:
    first = insert(services, *routing_set(30))
    v1 = services.datasets.create_version("router", ROUTER)
    split_v1 = {
        i.completion_id: i.split for i in services.datasets.list_items("router", 1, limit=100).data
    }
    insert(services, *routing_set(30, prefix="new"))
    services.completions.delete(first[0])
    v2 = services.datasets.create_version("router", ROUTER)
    assert (v1.version, v2.version) == (1, 2)
    assert v2.stats["examples"] == 59
    items_v1 = services.datasets.list_items("router", 1, limit=100).data
    assert len(items_v1) == 30  # the deleted completion is still in the v1 snapshot
    split_v2 = {
        i.completion_id: i.split for i in services.datasets.list_items("router", 2, limit=100).data
    }
    for cid, split in split_v2.items():
        if cid in split_v1:
            assert split_v1[cid] == split
    assert [v.version for v in services.datasets.list_versions("router")] == [1, 2]
    assert services.datasets.get("router").latest_version == 2


def test_conversation_groups_and_same_question_stay_on_one_side(services: Services) -> None:
    # the same question asked many times (teacher re-runs) with different answers
    recs = [
        completion("同じ質問です", f"answer {i}", metadata={"prompt": "router"}) for i in range(20)
    ]
    recs += routing_set(20)
    insert(services, *recs)
    services.datasets.create_version("router", {**ROUTER, "split": {"train": 0.5, "test": 0.5}})
    items = services.datasets.list_items("router", limit=100).data
    same = {i.split for i in items if i.example["messages"][1]["content"] == "同じ質問です"}
    assert len(same) == 1
    assert len({i.split for i in items}) == 2


def test_exact_duplicates_removed_or_kept_on_one_side(services: Services) -> None:
    dup = [
        completion("What is my VPN password?", "Reset it.", metadata={"prompt": "router"})
        for _ in range(3)
    ]
    dup.append(completion("what   is my VPN password?", "reset it.", metadata={"prompt": "router"}))
    ids = insert(services, *dup, *routing_set(10))
    v = services.datasets.create_version("router", ROUTER)
    assert v.stats["duplicates"]["found"] == 3 and v.stats["duplicates"]["removed"] == 3
    assert {d["duplicate_of"] for d in v.stats["duplicates"]["items"]} == {ids[0]}
    assert v.stats["examples"] == 11
    kept = services.datasets.create_version("router", {**ROUTER, "keep_duplicates": True})
    assert kept.stats["examples"] == 14
    items = [
        i
        for i in services.datasets.list_items("router", 2, limit=100).data
        if i.completion_id in ids[:4]
    ]
    assert len(items) == 4 and len({i.split for i in items}) == 1
    none = services.datasets.create_version("router", {**ROUTER, "dedupe": "none"})
    assert none.stats["duplicates"]["found"] == 0 and none.stats["examples"] == 14


def test_corrections_replace_outputs_with_lineage(services: Services) -> None:
    ids = insert(services, *routing_set(12))
    queue = services.annotations.create_queue(
        {
            "name": "review",
            "source": {"type": "completions", "metadata": {"prompt": "router"}},
            "priority": "oldest",
        }
    )
    item = services.annotations.claim(queue.id, "alice")
    assert item is not None and item.completion_id == ids[0]
    services.annotations.submit(
        queue.id,
        item.id,
        {"version": item.version, "corrected_output": "CORRECTED", "action": "accept"},
    )
    # an edit that is not accepted does not count
    other = services.annotations.claim(queue.id, "bob")
    assert other is not None
    services.annotations.submit(
        queue.id, other.id, {"version": other.version, "corrected_output": "draft"}
    )
    v = services.datasets.create_version("router", ROUTER)
    assert v.stats["corrected"] == 1
    items = {i.completion_id: i for i in services.datasets.list_items("router", limit=100).data}
    assert items[ids[0]].corrected is True
    assert items[ids[0]].example["messages"][-1] == {"role": "assistant", "content": "CORRECTED"}
    assert items[other.completion_id].corrected is False
    # the stored completion itself is unchanged
    original = services.completions.get(ids[0]).response
    assert original is not None and original["choices"][0]["message"]["content"] != "CORRECTED"
    # a dataset of the queue's accepted items
    accepted = services.datasets.create_version(
        "accepted", {"source": {"queue_id": queue.id}, "split": {"train": 1.0}}
    )
    assert accepted.stats["examples"] == 1 and accepted.stats["corrected"] == 1


def test_prompt_version_guard_warns_or_refuses(services: Services) -> None:
    insert(
        services,
        *routing_set(6, prompt_version="v1"),
        *routing_set(4, prompt_version="v2", prefix="b"),
    )
    v = services.datasets.create_version("router", ROUTER)
    assert v.stats["prompt_versions"] == {"v1": 6, "v2": 4}
    assert any("prompt_version" in w for w in v.stats["warnings"])
    with pytest.raises(ConflictError) as err:
        services.datasets.create_version("strict", {**ROUTER, "strict": True})
    assert err.value.status == 409 and err.value.code == "mixed_prompt_versions"
    with pytest.raises(NotFoundError):
        services.datasets.get("strict")  # nothing stored
    ok = services.datasets.create_version(
        "strict",
        {"source": {"metadata": {"prompt": "router", "prompt_version": "v2"}}, "strict": True},
    )
    assert ok.stats["examples"] == 4
    assert not any("prompt_version" in w for w in ok.stats["warnings"])


def test_bad_requests_store_nothing(services: Services) -> None:
    insert(services, *routing_set(5))
    with pytest.raises(InvalidRequestError) as err:
        services.datasets.create_version("x", {"source": {"metadata": {"prompt": "nope"}}})
    assert err.value.param == "source" and "matches no stored completion" in err.value.message
    with pytest.raises(InvalidRequestError) as err:
        services.datasets.create_version("x", {**ROUTER, "split": {"train": 0.8, "test": 0.1}})
    assert err.value.param == "split" and "sum to 1" in err.value.message
    with pytest.raises(InvalidRequestError) as err:
        services.datasets.create_version("x", {**ROUTER, "split": {"train": 0.5, "holdout": 0.5}})
    assert err.value.param == "split"
    with pytest.raises(InvalidRequestError) as err:
        services.datasets.create_version("x", {**ROUTER, "dedupe": "fuzzy"})
    assert err.value.param == "dedupe"
    with pytest.raises(InvalidRequestError) as err:
        services.datasets.create_version("x", {"source": {"completion_ids": ["chatcmpl-missing"]}})
    assert err.value.param == "source.completion_ids"
    assert services.datasets.list().data == []


def test_failed_completions_are_skipped(services: Services) -> None:
    insert(
        services,
        *routing_set(3),
        completion("boom", "", status="failed", metadata={"prompt": "router"}),
    )
    v = services.datasets.create_version("router", ROUTER)
    assert v.stats["examples"] == 3 and v.stats["skipped_no_output"] == 1


def test_import_jsonl_and_line_numbered_errors(services: Services) -> None:
    good = [
        {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(15)
    ]
    raw = b"".join(orjson.dumps(x) + b"\n" for x in good)
    v = services.datasets.import_jsonl(
        "imported", io.BytesIO(raw), {"split": {"train": 0.8, "validation": 0.2}}
    )
    assert v.stats["examples"] == 15
    assert all(
        i.completion_id is None for i in services.datasets.list_items("imported", limit=100).data
    )
    bad = raw + b'{"messages": [{"role": "user"}]}\nnot json\n'
    with pytest.raises(InvalidRequestError) as err:
        services.datasets.import_jsonl("imported", io.BytesIO(bad))
    assert "line 16" in err.value.message and "line 17" in err.value.message
    assert err.value.param == "file"
    assert services.datasets.get("imported").latest_version == 1


def test_export_to_file_id(services: Services) -> None:
    insert(services, *routing_set(30))
    services.datasets.create_version(
        "router", {**ROUTER, "split": {"train": 0.9, "validation": 0.1}}
    )
    record = services.datasets.export_to_file("router", split="train")
    assert record.purpose == "fine-tune" and record.status == "processed"
    assert record.filename == "router-v1-train.jsonl"
    with services.files.open(record.id) as stream:
        lines = stream.read().splitlines()
    assert (
        len(lines) == services.datasets.get_version("router").stats["splits"]["train"]["examples"]
    )
    with pytest.raises(InvalidRequestError) as err:
        services.datasets.export_to_file("router", split="test")  # empty split
    assert err.value.param == "split"


def test_near_duplicates_removed_or_kept_on_one_side(services: Services) -> None:
    pytest.importorskip("sentence_transformers")
    recs = [
        completion(
            "How do I reset my VPN password?", "Use the portal.", metadata={"prompt": "router"}
        ),
        completion(
            "How can I reset my VPN password?", "Use the portal.", metadata={"prompt": "router"}
        ),
        completion(
            "Where do I send travel receipts?", "Expense tool.", metadata={"prompt": "router"}
        ),
    ]
    ids = insert(services, *recs)
    spec = {**ROUTER, "dedupe": "near", "near_threshold": 0.9, "split": {"train": 0.5, "test": 0.5}}
    v = services.datasets.create_version("near", spec)
    dup = v.stats["duplicates"]
    assert dup["found"] == 1 and dup["items"][0]["completion_id"] == ids[1]
    assert dup["items"][0]["duplicate_of"] == ids[0] and dup["items"][0]["kind"] == "near"
    assert v.stats["examples"] == 2
    kept = services.datasets.create_version("near", {**spec, "keep_duplicates": True})
    assert kept.stats["examples"] == 3
    items = {i.completion_id: i.split for i in services.datasets.list_items("near", 2).data}
    assert items[ids[0]] == items[ids[1]]
