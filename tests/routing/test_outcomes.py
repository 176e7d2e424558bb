"""The pieces under the gateway: the route table's index, the outcome writer's recovery and the
rollback window (in process, on a real SQLite store)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from distillery.routing.grading import grading_item
from distillery.routing.outcomes import OutcomeLog, RollbackWatch
from distillery.routing.table import RouteTable, build_route
from distillery.store import Store
from distillery.store.routes import Outcome, RouteRecord, RoutesRepo


def _record(route_id: str, match: dict[str, Any], **spec: Any) -> RouteRecord:
    body = {"name": route_id, "match": match, "student": "s", **spec}
    return RouteRecord(route_id, route_id, 0, 0, spec.get("mode", "shadow"), 1, body)


def _table(*records: RouteRecord) -> RouteTable:
    table = RouteTable()
    table.replace([build_route(r, lambda cfg, param: None) for r in records])  # type: ignore[arg-type, return-value]
    return table


def test_table_matches_by_model_and_metadata() -> None:
    table = _table(
        _record("a", {"model": "t", "metadata": {"prompt": "a"}}),
        _record("b", {"model": "t", "metadata": {"prompt": "b"}, "prompt_version": "v2"}),
        _record("c", {"model": "u"}),  # all of model u's traffic
    )
    assert table.match("t", {"prompt": "a", "user": "x"}).id == "a"  # type: ignore[union-attr]
    assert table.match("t", {"prompt": "b", "prompt_version": "v2"}).id == "b"  # type: ignore[union-attr]
    assert table.match("t", {"prompt": "b", "prompt_version": "v1"}) is None
    assert table.match("t", {"user": "x"}) is None and table.match("t", None) is None
    assert table.match("u", None).id == "c"  # type: ignore[union-attr]
    assert table.match("nope", {"prompt": "a"}) is None


def test_canary_buckets_are_sticky_and_proportional() -> None:
    route = _table(_record("r", {"model": "t"}, mode="canary", percent=30, sticky_key="user")).get(
        "r"
    )
    assert route is not None
    upstream = {"messages": [{"role": "user", "content": "hi"}]}
    picks = [route.to_student({"user": f"u{i}"}, upstream) for i in range(10_000)]
    assert 0.28 < sum(picks) / len(picks) < 0.32
    assert picks == [route.to_student({"user": f"u{i}"}, upstream) for i in range(10_000)]
    # without the sticky key: by the request, so the same question lands on the same side
    one = route.to_student(None, upstream)
    assert all(route.to_student(None, upstream) == one for _ in range(10))


def test_graders_that_read_the_teachers_answer_are_known() -> None:
    judge_input = [
        {"role": "user", "content": "Same as {{ item.teacher }}? {{sample.output_text}}"}
    ]
    graders = [
        {"type": "string_check", "name": "field", "reference": "{{item.teacher_json.category}}"},
        {"type": "label_model", "name": "judge", "input": judge_input},
        {"type": "string_check", "name": "own", "reference": "{{item.teachers}}"},
        {"type": "valid_json", "name": "json"},
    ]
    route = _table(_record("r", {"model": "t"}, graders=graders)).get("r")
    assert route is not None
    needs = {g.name: g.needs_teacher for g in route.graders}
    assert needs == {"field": True, "judge": True, "own": False, "json": False}
    # the teacher's answer as the graders see it: its text, and the same parsed as JSON
    upstream = {"messages": [{"role": "user", "content": "請求書が届きません"}]}
    item = grading_item(upstream, None, '{"category": "請求", "reason": "invoice"}')
    assert item["teacher_json"] == {"category": "請求", "reason": "invoice"}
    assert item["input"] == "請求書が届きません"
    assert grading_item(upstream, None, "billing, I think")["teacher_json"] is None
    assert grading_item(upstream, None, None)["teacher_json"] is None


def test_outcome_writer_survives_store_failures(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'd.db'}")
    repo = RoutesRepo(store)
    route_id = repo.create("r", "full", {"name": "r"}, {"type": "created"})
    failing = {"left": 2}
    real = repo.add_outcomes

    def flaky(outcomes: Any) -> None:
        if failing["left"]:
            failing["left"] -= 1
            raise OSError("disk unavailable")
        real(outcomes)

    repo.add_outcomes = flaky  # type: ignore[method-assign]
    log = OutcomeLog(repo, interval_s=0.01)

    async def scenario() -> None:
        task = asyncio.create_task(log.run())
        await asyncio.sleep(0)
        for _ in range(3):
            log.add(Outcome(route_id, 0, "full", "student", "s", passed=False))
        while log.pending:
            await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(scenario())
    assert log.failures == 2 and log.written == 3 and log.last_error is None
    assert repo.graded(route_id, limit=10) == [False, False, False]
    # the rollback window is seeded from the store after a restart
    watch = RollbackWatch(repo)
    route = _table(
        _record(
            route_id,
            {"model": "t"},
            mode="full",
            rollback={"floor": 0.5, "window": 4, "min_samples": 4},
        )
    ).get(route_id)
    assert route is not None
    breach = watch.observe(route, False)
    assert breach is not None and breach["pass_rate"] == 0.0 and breach["window"] == 4
    assert watch.observe(route, False) is None  # reported once per route version
    store.close()
