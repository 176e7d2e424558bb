"""Annotation queues on SQLite and PostgreSQL: ordering, race-safe claims, expiry, conflicts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distillery.errors import ConflictError, InvalidRequestError, NotFoundError
from distillery.services import Services
from distillery.store.tables import EvalOutputItemRow, EvalRow, EvalRunRow
from tests.support.stored import completion, insert, open_services, routing_set


@pytest.fixture
def services(home: Path, db_url: str) -> Iterator[Services]:
    with open_services(home, db_url) as svc:
        yield svc


def ROUTER(**extra: object) -> dict[str, object]:
    return {
        "name": "review",
        "source": {"type": "completions", "metadata": {"prompt": "router"}},
        **extra,
    }


def add_eval_run(
    services: Services, run_id: str, results: dict[str, bool], eval_id: str = "eval_test"
) -> None:
    """Output items as the evals service stores them (``datasource_item`` names the completion)."""
    now = int(time.time())
    with services.store.write() as session:
        if session.get(EvalRow, 1) is None:  # the first run creates the eval
            session.add(EvalRow(id=eval_id, created_at=now, updated_at=now, body={"id": eval_id}))
        session.add(
            EvalRunRow(
                id=run_id, eval_id=eval_id, created_at=now, status="completed", body={"id": run_id}
            )
        )
        session.flush()
        for index, (cid, ok) in enumerate(results.items()):
            session.add(
                EvalOutputItemRow(
                    id=f"outputitem_{run_id}_{index}",
                    run_id=run_id,
                    datasource_item_id=index,
                    status="pass" if ok else "fail",
                    body={
                        "datasource_item": {"completion_id": cid, "input": "x"},
                        "results": [
                            {"name": "label", "passed": ok, "score": float(ok)},
                            {"name": "json", "passed": True, "score": 1.0},
                        ],
                        "sample": {"output": [{"role": "assistant", "content": "y"}]},
                    },
                )
            )


def drain(services: Services, queue_id: str) -> list[str]:
    out = []
    while (item := services.annotations.claim(queue_id, "r")) is not None:
        out.append(item.completion_id)
    return out


def test_orders_oldest_newest_random(services: Services) -> None:
    ids = insert(services, *routing_set(8))
    q = services.annotations.create_queue(ROUTER(priority="oldest"))
    assert q.counts == {"pending": 8, "claimed": 0, "accepted": 0, "skipped": 0, "total": 8}
    assert drain(services, q.id) == ids
    q = services.annotations.create_queue(ROUTER(priority="newest"))
    assert drain(services, q.id) == ids[::-1]
    r1 = drain(services, services.annotations.create_queue(ROUTER(priority="random", seed=7)).id)
    r2 = drain(services, services.annotations.create_queue(ROUTER(priority="random", seed=7)).id)
    r3 = drain(services, services.annotations.create_queue(ROUTER(priority="random", seed=8)).id)
    assert r1 == r2 and sorted(r1) == sorted(ids) and r1 != r3


def test_teacher_failed_first_then_student_failed(services: Services) -> None:
    ids = insert(services, *routing_set(6))
    teacher = dict.fromkeys(ids, True)
    teacher[ids[4]] = False
    teacher[ids[2]] = False
    student = dict.fromkeys(ids, True)
    student[ids[5]] = False
    student[ids[2]] = False
    add_eval_run(services, "evalrun_teacher", teacher)
    add_eval_run(services, "evalrun_student", student, eval_id="eval_test")
    q = services.annotations.create_queue(
        ROUTER(teacher_run_id="evalrun_teacher", student_run_id="evalrun_student")
    )
    assert q.priority == "teacher_failed_first"
    order = drain(services, q.id)
    assert order == [ids[2], ids[4], ids[5], ids[0], ids[1], ids[3]]
    # a queue made from the eval run itself
    q2 = services.annotations.create_queue(
        {
            "name": "from run",
            "source": {"type": "eval_run", "run_id": "evalrun_teacher"},
            "student_run_id": "evalrun_student",
        }
    )
    assert drain(services, q2.id)[:3] == [ids[2], ids[4], ids[5]]
    with pytest.raises(NotFoundError) as err:
        services.annotations.create_queue(
            {"name": "x", "source": {"type": "eval_run", "run_id": "evalrun_nope"}}
        )
    assert err.value.param == "source.run_id"


def test_empty_source_and_bad_spec(services: Services) -> None:
    insert(services, *routing_set(2))
    with pytest.raises(InvalidRequestError) as err:
        services.annotations.create_queue(
            {"name": "x", "source": {"type": "completions", "model": "nope"}}
        )
    assert err.value.param == "source"
    with pytest.raises(InvalidRequestError) as err:
        services.annotations.create_queue(ROUTER(priority="loudest"))
    assert err.value.param == "priority"
    assert services.annotations.list_queues().data == []


@pytest.mark.parametrize("reviewers", [8])
def test_two_reviewers_never_get_the_same_item(services: Services, reviewers: int) -> None:
    insert(services, *routing_set(40))
    q = services.annotations.create_queue(ROUTER(priority="oldest"))
    got: dict[str, list[str]] = {f"r{i}": [] for i in range(reviewers)}
    errors: list[BaseException] = []
    start = threading.Barrier(reviewers)

    def work(name: str) -> None:
        try:
            start.wait()
            while (item := services.annotations.claim(q.id, name)) is not None:
                got[name].append(item.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    claimed = [i for items in got.values() for i in items]
    assert len(claimed) == 40 and len(set(claimed)) == 40
    final = services.annotations.get_queue(q.id).counts
    assert final["claimed"] == 40 and final["pending"] == 0


def test_claims_expire_and_return_to_the_queue(services: Services) -> None:
    insert(services, *routing_set(1))
    q = services.annotations.create_queue(ROUTER(claim_timeout_s=1))
    first = services.annotations.claim(q.id, "alice")
    assert first is not None and first.claimed_by == "alice"
    view = services.annotations.item_view(first)
    assert view["claim_expires_at"] == first.claimed_at + 1
    assert view["input"]["messages"][-1]["role"] == "user" and view["output"]
    assert services.annotations.claim(q.id, "bob") is None
    # an abandoned claim: move its clock back instead of sleeping
    taken = services.annotations.repo.claim_next(
        q.id, "bob", claim_timeout_s=1, now=first.claimed_at + 5
    )
    assert taken is not None and taken.id == first.id and taken.claimed_by == "bob"
    # alice's late edit is detected, not lost
    with pytest.raises(ConflictError) as err:
        services.annotations.submit(
            q.id, first.id, {"version": first.version, "corrected_output": "late"}
        )
    assert err.value.status == 409 and err.value.param == "version"


def test_edits_keep_the_original_and_stale_versions_conflict(services: Services) -> None:
    (cid,) = insert(
        services,
        completion("VPN が繋がらない", '{"category": "総務"}', metadata={"prompt": "router"}),
    )
    q = services.annotations.create_queue(ROUTER())
    item = services.annotations.claim(q.id, "alice")
    assert item is not None
    saved = services.annotations.submit(
        q.id,
        item.id,
        {
            "version": item.version,
            "corrected_output": '{"category": "情報システム"}',
            "rating": 2,
            "tags": ["wrong-label", " wrong-label "],
            "comment": "IT, not GA",
        },
    )
    assert saved.version == item.version + 1 and saved.status == "claimed"
    assert (saved.rating, saved.tags, saved.comment) == (2, ["wrong-label"], "IT, not GA")
    assert saved.corrected_output == '{"category": "情報システム"}'
    view = services.annotations.item_view(saved)
    assert view["output"] == '{"category": "総務"}'  # the original beside the correction
    with pytest.raises(ConflictError):  # a second tab with the old version
        services.annotations.submit(q.id, item.id, {"version": item.version, "rating": 5})
    accepted = services.annotations.submit(
        q.id, item.id, {"version": saved.version, "action": "accept"}
    )
    assert accepted.status == "accepted" and accepted.rating == 2  # untouched fields stay
    assert (
        services.annotations.corrections([cid])[cid].corrected_output
        == '{"category": "情報システム"}'
    )
    original = services.completions.get(cid).response
    assert (
        original is not None
        and original["choices"][0]["message"]["content"] == '{"category": "総務"}'
    )
    for bad, param in (
        ({"version": 9, "rating": 6}, "rating"),
        ({"rating": 3}, "version"),
        ({"version": 9, "color": 1}, "color"),
    ):
        with pytest.raises(InvalidRequestError) as err:
            services.annotations.submit(q.id, item.id, bad)
        assert err.value.param == param


def test_concurrent_edits_of_one_item_one_wins(services: Services) -> None:
    insert(services, *routing_set(1))
    q = services.annotations.create_queue(ROUTER())
    item = services.annotations.claim(q.id, "alice")
    assert item is not None
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def edit(n: int) -> None:
        barrier.wait()
        try:
            services.annotations.submit(
                q.id, item.id, {"version": item.version, "comment": f"edit {n}"}
            )
            result = f"ok {n}"
        except ConflictError:
            result = "conflict"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=edit, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [o for o in outcomes if o.startswith("ok")]
    assert len(winners) == 1 and outcomes.count("conflict") == 5
    final = services.annotations.get_item(q.id, item.id)
    assert final.comment == "edit " + winners[0].split()[1] and final.version == item.version + 1


def test_release_and_skip(services: Services) -> None:
    insert(services, *routing_set(2))
    q = services.annotations.create_queue(ROUTER(priority="oldest"))
    a = services.annotations.claim(q.id, "alice")
    assert a is not None
    released = services.annotations.submit(q.id, a.id, {"version": a.version, "action": "release"})
    assert released.status == "pending" and released.claimed_by is None
    again = services.annotations.claim(q.id, "bob")
    assert again is not None and again.id == a.id
    services.annotations.submit(q.id, again.id, {"version": again.version, "action": "skip"})
    counts = services.annotations.get_queue(q.id).counts
    assert counts["skipped"] == 1 and counts["pending"] == 1
