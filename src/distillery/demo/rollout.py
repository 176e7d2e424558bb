"""The demo's last step: the application's traffic moves to the student, safely.

After the report, the demo sends the held-out questions to its teacher (``gpt-4o``) through the
gateway with their metadata, as the application would, and moves the prompt's route through the
modes an operator would:

1. **shadow**: the teacher answers the users; the student answers the same requests in the
   background, graded against the teacher's answers (same category, the schema);
2. **the gate**: the held-out comparison of the teacher's and the student's eval runs, and the
   shadow agreement. A refusal is shown with its numbers, and the rest of the traffic stays in
   shadow: the demo shows the safety working, it does not fail;
3. **canary**: half the users (sticky by ``user``) get the student;
4. **full**: every request goes to the student, its answer checked against the JSON schema by a
   blocking grader (a failing answer is replaced by the teacher's: a fallback);
5. **an incident**: a burst of concurrent requests beyond what the student's server holds (its
   running batch and queue). The requests it cannot take fall back to the teacher, so no user
   sees an error; the route's online pass rate drops below its floor and the gateway rolls the
   route back to shadow by itself.

Offline, the teacher is the recorded one: a ``replay`` provider answering from the captured
traffic (``distillery completions export`` of the test split). With ``--teacher``, the live
teacher answers. Every figure of the rollout section comes from the routed requests: the
headers of the answers (who served each one) and the route's timeline and stats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from distillery.capture.importer import export_lines
from distillery.capture.stored import StoredCompletion
from distillery.demo.dataset import Inquiry, messages_for, response_format, response_schema
from distillery.demo.stack import check_response as _check
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.providers.base import ProviderContext
from distillery.providers.local_config import LocalProviderConfig
from distillery.providers.registry import provider_kind
from distillery.providers.replay import ReplayProviderConfig
from distillery.services import Services

REPLAY_PROVIDER = "demo-recorded-teacher"
# the fields of a captured request the rollout sends again (what the teacher was asked)
_REQUEST_FIELDS = frozenset(
    {"messages", "response_format", "temperature", "top_p", "seed", "max_tokens"}
    | {"max_completion_tokens", "stop", "tools", "tool_choice", "n"}
)
CONCURRENCY = 8  # the application's requests in flight, but in the burst
USERS = 24  # distinct users (canary stickiness is by user)


@dataclass
class RolloutOptions:
    # the gate: the student's share of the teacher's pass rate, at the lower end of its 95%
    # interval on the held-out items (and the shadow agreement)
    min_percent_of_teacher: float = 90.0
    # the shadow pairs' agreement with the teacher: the teacher is wrong on 7% of the held-out
    # questions, and a student trained on the corrected answers disagrees with it there
    min_shadow_agreement: float = 80.0
    # requests per phase (at most; fewer with fewer questions): the student answers about one
    # request a second on 2 cores, and the rollout stays within two minutes
    shadow_requests: int = 30
    canary_requests: int = 16
    full_requests: int = 14
    canary_percent: float = 50.0
    # back to shadow when fewer than 90% of the last 20 answers to users pass
    rollback_floor: float = 0.9
    rollback_window: int = 20
    burst_excess: int = 24  # requests beyond the student server's capacity in the incident
    # promote even when the gate refuses: an operator's override, recorded as `gate_bypassed`
    force: bool = False


@dataclass
class Sent:
    """One stage of the rollout as the application saw it: answers by who served them."""

    stage: str
    mode: str
    requests: int = 0
    served: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    seconds: float = 0.0


@dataclass
class RolloutReport:
    route_id: str
    route_name: str
    teacher: str
    student: str
    recorded_teacher: bool
    gate: dict[str, Any]  # the gate's decision when the route was promoted
    promoted: bool
    sent: list[Sent]
    timeline: dict[str, Any]  # GET /v1/distillery/routes/{id}/timeline
    stats: dict[str, Any]  # GET /v1/distillery/routes/{id}/stats
    events: list[dict[str, Any]]  # oldest first
    final_mode: str
    seconds: float
    capacity: int | None = None  # the student server's running batch + queue


class Rollout:
    def __init__(
        self,
        services: Services,
        *,
        fingerprint: str,
        prompt: str,
        prompt_version: str,
        teacher: str,
        recorded_teacher: bool,
        questions: Sequence[Inquiry],
        options: RolloutOptions | None = None,
        progress: ProgressCallback | None = None,
        say: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.services = services
        self.fp = fingerprint
        self.prompt = prompt
        self.version = prompt_version
        self.teacher = teacher
        self.recorded_teacher = recorded_teacher
        self.questions = list(questions)
        self.options = options or RolloutOptions()
        self.progress = progress
        self.say = say
        self.name = f"demo-{prompt}-{fingerprint}"
        self.captured: dict[str, dict[str, Any]] = {}

    # -- the teacher -------------------------------------------------------------------------

    def record_teacher(self, stored: Sequence[StoredCompletion]) -> Path:
        """Serve the teacher from the captured traffic: the ``stored`` completions exported as
        recordings, answered by a ``replay`` provider."""
        home = self.services.settings.home
        path = home / "demo" / f"recorded-teacher-{self.fp}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for line in export_lines(stored):
                out.write(line)
        tmp.replace(path)
        config = ReplayProviderConfig(kind="replay", models=[self.teacher], recordings=[str(path)])
        context = ProviderContext(home=home)
        provider = provider_kind("replay").build(REPLAY_PROVIDER, config, context)
        # before any other provider of the same model name: offline, the recording answers
        self.services.providers.add(provider, first=True)  # type: ignore[arg-type]
        return path

    def capacity(self, student: str) -> int | None:
        """Requests the student's local server takes at once (its batch and its queue)."""
        for provider in self.services.config.providers.values():
            if isinstance(provider, LocalProviderConfig):
                base = student.split(":")[1] if student.startswith("ft:") else student
                if base in provider.models or student in provider.models:
                    return provider.max_batch_size + provider.max_queue
        return None

    # -- the route ---------------------------------------------------------------------------

    def route_body(self, student: str, teacher_run: str, student_run: str) -> dict[str, Any]:
        shadow_pairs = self._sizes()[0]
        return {
            "name": self.name,
            "match": {
                "model": self.teacher,
                "metadata": {"prompt": self.prompt, "demo": self.fp},
                "prompt_version": self.version,
            },
            "student": student,
            "mode": "shadow",
            "sticky_key": "user",
            "graders": [
                {
                    "type": "json_schema",
                    "name": "schema",
                    "input": "{{sample.output_text}}",
                    "schema": response_schema(),
                    "blocking": True,
                },
                {
                    "type": "string_check",
                    "name": "same_category",
                    "input": "{{sample.output_json.category}}",
                    "reference": "{{item.teacher_json.category}}",
                    "operation": "eq",
                },
            ],
            "gate": {
                "teacher_run": teacher_run,
                "student_run": student_run,
                "min_percent_of_teacher": self.options.min_percent_of_teacher,
                "min_shadow_agreement": self.options.min_shadow_agreement,
                "min_shadow_pairs": shadow_pairs,
            },
            "rollback": {
                "floor": self.options.rollback_floor,
                "window": self.options.rollback_window,
                "min_samples": self.options.rollback_window,
                "to": "shadow",
            },
            "shadow": {"max_concurrency": CONCURRENCY},
            "metadata": {"demo": self.fp},
        }

    def _sizes(self) -> tuple[int, int, int]:
        """How many questions go in shadow, canary and full: 40%, 30% and the rest of them, at
        most the options' numbers."""
        n = len(self.questions)
        o = self.options
        shadow = min(o.shadow_requests, max(1, round(0.4 * n)))
        canary = min(o.canary_requests, n - shadow, max(1, round(0.3 * n)))
        return shadow, canary, min(o.full_requests, n - shadow - canary)

    def create_route(self, http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
        """The route for the prompt's traffic, in shadow (a previous run's is replaced)."""
        listed = http.get("/v1/distillery/routes", params={"limit": 100})
        _check(listed)
        for old in listed.json()["data"]:
            if old["name"] == self.name:
                _check(http.delete(f"/v1/distillery/routes/{old['id']}"))
        created = http.post("/v1/distillery/routes", json=body)
        _check(created)
        return dict(created.json())

    # -- the traffic -------------------------------------------------------------------------

    @staticmethod
    def _captured_requests(captured: Sequence[StoredCompletion]) -> dict[str, dict[str, Any]]:
        """The application's captured request for each question (by the ``item`` metadata):
        the rollout sends them again exactly, so the recorded teacher has each one."""
        found: dict[str, dict[str, Any]] = {}
        for stored in captured:
            item = stored.metadata.get("item")
            if item is not None:
                found[item] = {k: v for k, v in stored.request.items() if k in _REQUEST_FIELDS}
        return found

    def _request(self, inquiry: Inquiry, index: int) -> dict[str, Any]:
        """The application's request: the captured one (else the demo's own), with its user and
        the prompt's metadata."""
        captured = self.captured.get(inquiry.id) or {
            "messages": messages_for(inquiry),
            "response_format": response_format(),
            "temperature": 0,
        }
        return {
            **captured,
            "model": self.teacher,
            "store": True,
            "metadata": {
                "prompt": self.prompt,
                "prompt_version": self.version,
                "demo": self.fp,
                "split": "rollout",
                "item": inquiry.id,
                "lang": inquiry.lang,
                "user": f"user-{index % USERS:02d}",
            },
        }

    async def send(
        self,
        client: openai.AsyncOpenAI,
        stage: str,
        mode: str,
        batch: Sequence[tuple[int, Inquiry]],
        *,
        concurrency: int,
    ) -> Sent:
        """Send ``batch`` (``concurrency`` at a time) and count who served each answer."""
        sent = Sent(stage=stage, mode=mode)
        slots = asyncio.Semaphore(concurrency)
        started = time.perf_counter()

        async def one(index: int, inquiry: Inquiry) -> None:
            async with slots:
                try:
                    raw = await client.chat.completions.with_raw_response.create(
                        **self._request(inquiry, index)
                    )
                except openai.APIError:
                    sent.errors += 1
                else:
                    side = raw.headers.get("x-distillery-served-by", "unrouted")
                    sent.served[side] = sent.served.get(side, 0) + 1
                sent.requests += 1
                report(self.progress, ProgressEvent(f"rollout: {stage}", sent.requests, len(batch)))

        await asyncio.gather(*(one(i, q) for i, q in batch))
        sent.seconds = time.perf_counter() - started
        return sent

    # -- the whole rollout -------------------------------------------------------------------

    def run(
        self,
        base_url: str,
        *,
        student: str,
        teacher_run: str,
        student_run: str,
        captured: dict[str, str],
    ) -> RolloutReport:
        started = time.perf_counter()
        stored = list(self.services.stored_completions.iterate(metadata=captured))
        self.captured = self._captured_requests(stored)
        if self.recorded_teacher:
            path = self.record_teacher(stored)
            self.say(f"rollout: the recorded teacher answers {self.teacher} from {path.name}")
        with httpx.Client(base_url=base_url, timeout=600) as http:
            route = self.create_route(http, self.route_body(student, teacher_run, student_run))
            self.say(f"rollout: route {route['id']} for the prompt's traffic, in shadow")
            result = asyncio.run(self._phases(base_url, http, route["id"], student))
        result.seconds = time.perf_counter() - started
        return result

    async def _phases(
        self, base_url: str, http: httpx.Client, route_id: str, student: str
    ) -> RolloutReport:
        n_shadow, n_canary, n_full = self._sizes()
        numbered = list(enumerate(self.questions))
        shadow_q = numbered[:n_shadow]
        canary_q = numbered[n_shadow : n_shadow + n_canary]
        full_q = numbered[n_shadow + n_canary : n_shadow + n_canary + n_full]
        capacity = self.capacity(student)
        # the SDK's own connection pool holds 1,000: the burst needs no other client
        async with openai.AsyncOpenAI(
            base_url=base_url + "/v1", api_key="demo", max_retries=0, timeout=600
        ) as client:
            sent = [await self.send(client, "shadow", "shadow", shadow_q, concurrency=CONCURRENCY)]
            await asyncio.to_thread(self._wait_for_shadow, http, route_id, len(shadow_q))
            gate = _json(http.get(f"/v1/distillery/routes/{route_id}/gate"))
            promoted = http.post(
                f"/v1/distillery/routes/{route_id}/promote",
                json={
                    "mode": "canary",
                    "percent": self.options.canary_percent,
                    "force": self.options.force,
                },
            )
            if promoted.status_code == 409:  # the gate refuses: the rest stays in shadow
                gate = promoted.json()["error"].get("gate") or gate
                self.say("rollout: the gate refuses; the student stays in shadow")
                rest = canary_q + full_q
                if rest:
                    sent.append(
                        await self.send(client, "shadow", "shadow", rest, concurrency=CONCURRENCY)
                    )
            else:
                _check(promoted)
                label = f"canary {self.options.canary_percent:g}%"
                sent.append(
                    await self.send(client, label, "canary", canary_q, concurrency=CONCURRENCY)
                )
                _check(
                    http.post(f"/v1/distillery/routes/{route_id}/promote", json={"mode": "full"})
                )
                sent.append(
                    await self.send(client, "full", "full", full_q, concurrency=CONCURRENCY)
                )
                if capacity is not None:
                    sent.append(await self._incident(client, http, route_id, capacity))
            await asyncio.to_thread(self._wait_for_shadow, http, route_id, 0)
        timeline = _json(http.get(f"/v1/distillery/routes/{route_id}/timeline"))
        stats = _json(http.get(f"/v1/distillery/routes/{route_id}/stats"))
        events = _json(http.get(f"/v1/distillery/routes/{route_id}/events?limit=100"))["data"]
        route = _json(http.get(f"/v1/distillery/routes/{route_id}"))
        return RolloutReport(
            route_id=route_id,
            route_name=self.name,
            teacher=self.teacher,
            student=student,
            recorded_teacher=self.recorded_teacher,
            gate=gate,
            promoted=promoted.status_code < 400,
            sent=sent,
            timeline=timeline,
            stats=stats,
            events=list(reversed(events)),
            final_mode=str(route["mode"]),
            seconds=0.0,
            capacity=capacity,
        )

    async def _incident(
        self, client: openai.AsyncOpenAI, http: httpx.Client, route_id: str, capacity: int
    ) -> Sent:
        """A burst of requests beyond the student server's capacity, all at once."""
        size = capacity + self.options.burst_excess
        burst = [(i, self.questions[i % len(self.questions)]) for i in range(size)]
        self.say(
            f"rollout: incident: a burst of {size} requests at once, {capacity} more than the "
            "student's server holds"
        )
        sent = await self.send(client, "burst", "full", burst, concurrency=size)
        await asyncio.to_thread(self._wait_for_mode, http, route_id, "full")
        return sent

    def _wait_for_shadow(self, http: httpx.Client, route_id: str, pairs: int) -> None:
        """Until ``pairs`` shadow answers are graded and none is in flight (at most 5 min)."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            health = _json(http.get("/health"))
            waiting = (health.get("routes") or {}).get("background_tasks", 0)
            stats = _json(http.get(f"/v1/distillery/routes/{route_id}/stats"))
            if stats["shadow"]["graded"] >= pairs and not waiting:
                return
            time.sleep(0.5)

    def _wait_for_mode(self, http: httpx.Client, route_id: str, mode: str) -> None:
        """Until the route has left ``mode`` (the automatic rollback runs off the request path;
        at most 30 s)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _json(http.get(f"/v1/distillery/routes/{route_id}"))["mode"] != mode:
                return
            time.sleep(0.2)


def _json(response: httpx.Response) -> dict[str, Any]:
    _check(response)
    return dict(response.json())
