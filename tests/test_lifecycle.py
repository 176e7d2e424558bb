"""The lifecycle: components start in order, stop in reverse (a failing stop skips none), and a
background task that dies is logged, counted, shown and restarted; ``/health`` lists them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from distillery.lifecycle import Hooks, Lifecycle, Periodic, SupervisedTask
from tests.support.live import LiveServer


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for something a background task does."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


def _recording(calls: list[str], name: str) -> Hooks:
    async def start() -> None:
        calls.append(f"start {name}")

    async def stop() -> None:
        calls.append(f"stop {name}")

    return Hooks(name, start=start, stop=stop)


def _raising(message: str) -> Callable[[], Awaitable[None]]:
    async def step() -> None:
        raise RuntimeError(message)

    return step


def test_components_start_in_order_and_stop_in_reverse() -> None:
    calls: list[str] = []
    lifecycle = Lifecycle()
    for name in ("a", "b", "c"):
        lifecycle.add(_recording(calls, name))

    async def main() -> None:
        await lifecycle.start()
        assert {n: h["state"] for n, h in lifecycle.health().items()} == {
            "a": "running",
            "b": "running",
            "c": "running",
        }
        await lifecycle.stop()

    asyncio.run(main())
    assert calls == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert lifecycle.names == ["a", "b", "c"]
    assert all(h["state"] == "stopped" for h in lifecycle.health().values())


def test_a_stop_that_raises_skips_none_of_the_others(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    lifecycle = Lifecycle()
    lifecycle.add(_recording(calls, "a"))
    lifecycle.add(Hooks("broken", stop=_raising("disk gone")))
    lifecycle.add(_recording(calls, "c"))

    async def main() -> None:
        await lifecycle.start()
        await lifecycle.stop()

    with caplog.at_level(logging.ERROR, logger="distillery.lifecycle"):
        asyncio.run(main())
    assert calls == ["start a", "start c", "stop c", "stop a"]
    broken = lifecycle.health()["broken"]
    assert broken["state"] == "failed" and broken["last_error"] == "RuntimeError: disk gone"
    assert any("stopping broken failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_start_that_fails_stops_the_started_ones_and_raises() -> None:
    calls: list[str] = []
    lifecycle = Lifecycle()
    lifecycle.add(_recording(calls, "a"))
    lifecycle.add(_recording(calls, "b"))
    lifecycle.add(Hooks("broken", start=_raising("no database")))
    lifecycle.add(_recording(calls, "never"))

    with pytest.raises(RuntimeError, match="no database"):
        asyncio.run(lifecycle.start())
    assert calls == ["start a", "start b", "stop b", "stop a"]
    assert lifecycle.health()["broken"]["state"] == "failed"
    assert lifecycle.health()["never"]["state"] == "stopped"


def test_names_are_unique() -> None:
    lifecycle = Lifecycle()
    lifecycle.add(Hooks("evals"))
    with pytest.raises(ValueError, match="evals"):
        lifecycle.add(Hooks("evals"))


def test_a_crashing_task_is_logged_counted_shown_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    seen: dict[str, bool] = {"cancelled": False}

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:  # a token in the message is masked where /health shows it
            raise ValueError("store refused sk-abcdefghijklmnop1234")
        try:
            await asyncio.Event().wait()  # forever, until stopped
        except asyncio.CancelledError:
            seen["cancelled"] = True
            raise

    task = SupervisedTask("writer", run, restart_delay_s=0.0)
    lifecycle = Lifecycle()
    lifecycle.add(task)

    async def main() -> None:
        await lifecycle.start()
        await _until(lambda: runs == 2)
        health = lifecycle.health()["writer"]
        assert health == {
            "state": "running",
            "restarts": 1,
            "last_error": "ValueError: store refused ***",
        }
        await lifecycle.stop()

    with caplog.at_level(logging.ERROR, logger="distillery.lifecycle"):
        asyncio.run(main())
    assert seen["cancelled"]  # stop cancelled the running task
    assert task.health()["state"] == "stopped" and task.restarts == 1 and runs == 2
    failures = [r for r in caplog.records if "writer: the task failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None


def test_a_task_that_returns_or_is_cancelled_by_another_is_restarted() -> None:
    runs = 0
    waiting: list[asyncio.Future[None]] = []

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            return  # a forever task that returns has died too
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.append(future)
        await future  # the second run: cancelled by someone else than stop()

    task = SupervisedTask("watch", run, restart_delay_s=0.0)

    async def main() -> None:
        await task.start()
        await _until(lambda: len(waiting) == 1)
        assert task.health()["last_error"] == "the task returned"
        waiting[0].cancel()
        await _until(lambda: runs == 3)
        assert task.restarts == 2 and task.health()["last_error"] == "CancelledError"
        await task.stop()

    asyncio.run(main())
    assert task.health()["state"] == "stopped"


def test_a_periodic_tick_that_raises_is_counted_and_the_ticks_go_on() -> None:
    calls = 0

    async def tick() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("database unreachable")

    periodic = Periodic("capture", 0.001, tick, at_start=True)

    async def main() -> None:
        await periodic.start()
        await _until(lambda: calls >= 5)
        await periodic.stop()

    asyncio.run(main())
    health = periodic.health()
    assert health["restarts"] == 1 and health["last_error"] == "OSError: database unreachable"
    assert health["state"] == "stopped" and health["ticks"] >= 3


def test_stop_runs_before_and_after_even_when_one_fails() -> None:
    calls: list[str] = []

    async def run() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            calls.append("cancelled")
            raise

    async def before() -> None:
        calls.append("before")
        raise RuntimeError("drain failed")

    async def after() -> None:
        calls.append("after")

    task = SupervisedTask("route_outcomes", run, before_stop=before, after_stop=after)

    async def main() -> None:
        await task.start()
        await asyncio.sleep(0)  # let it begin
        with pytest.raises(RuntimeError, match="drain failed"):
            await task.stop()

    asyncio.run(main())
    assert calls == ["before", "cancelled", "after"]
    assert task.health()["state"] == "failed" and task.restarts == 0


def test_health_lists_every_component_running(gateway: LiveServer) -> None:
    body = httpx.get(gateway.url + "/health").json()
    components = body["components"]
    expected = [
        "evals",
        "retention",
        "capture",
        "route_outcomes",
        "routes",
        "models",
        "worker",
        "distillations",
    ]
    assert list(components) == expected
    for name in expected:
        assert components[name]["state"] == "running", (name, components[name])
        assert components[name]["restarts"] == 0 and components[name]["last_error"] is None
    assert body["status"] == "ok" and "writer_restarts" in body and "routes" in body
    memory = body["memory"]  # the server process's resident memory, now and at its peak (MiB)
    assert 0 < memory["rss_mb"] <= memory["peak_rss_mb"]


def test_a_failed_model_preparation_is_reported_until_one_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distillery import weights

    monkeypatch.setattr(weights, "_failed", {})  # this test's failures only
    monkeypatch.setenv("DISTILLERY_HOME", str(tmp_path))
    broken = tmp_path / "broken" / "student.gguf"
    broken.parent.mkdir()
    broken.write_bytes(b"GGUF not really")
    component = weights.ModelPreparation()
    assert component.health()["state"] == "running"
    source = weights.ModelSource(name="broken-student", path=broken.parent, gguf_file=broken.name)
    with pytest.raises(Exception, match="broken-student"):
        weights.materialize(source)
    health = component.health()
    assert health["state"] == "failed" and health["preparing"] == {}
    assert "broken-student" in health["failed"] and health["last_error"]
    # a later preparation of the same model that succeeds clears it
    (tmp_path / "models" / "broken-student").mkdir(parents=True)
    (tmp_path / "models" / "broken-student" / ".complete").write_text("ok\n")
    weights.materialize(source)
    assert component.health()["state"] == "running" and component.health()["failed"] == {}


@pytest.mark.usefixtures("home")
def test_a_one_off_commands_stack_takes_up_no_queued_distillation() -> None:
    """``LocalStack`` (the demo, ``distillery distill``) serves the API to its own command: the
    distillations runner that a server has is left out, so a distillation queued or left running
    by a killed command is not run a second time beside the command's own."""
    from distillery.app import build_services
    from distillery.demo.stack import LocalStack

    services = build_services()
    with LocalStack(services) as stack:
        components = httpx.get(stack.url + "/health").json()["components"]
    assert "worker" in components and "distillations" not in components
