"""The checks a synthetic input passes before it is answered, the plan, the budget and the
language rule, on the real embedder (all-MiniLM-L6-v2) and real English and Japanese text."""

from __future__ import annotations

from typing import Any

import pytest

from distillery.costs.prices import PriceTable
from distillery.costs.usage import Usage
from distillery.curation.plan import Cell, SeedRow, Seeds, SynthesisSpec, make_plan
from distillery.curation.synthesize import Row, Synthesis
from distillery.curation.teacher import Budget, Teacher
from distillery.embedders import default_embedder
from distillery.providers.registry import ProviderRegistry
from distillery.store.datasets import DatasetItem
from distillery.text.lang import language_of


def _item(seq: int, split: str) -> DatasetItem:
    return DatasetItem(seq, "dsv_1", split, None, {"messages": []}, False, 0)


def _seeds(rows: list[tuple[str, str]], held_out: list[str]) -> Seeds:
    return Seeds(
        system="Route the inquiry.",
        rows=[
            SeedRow(t, "{}", language_of(t), label, _item(i, "train"))
            for i, (t, label) in enumerate(rows)
        ],
        held_out=held_out,
        settings={},
        label_field="category",
        labels=["billing", "technical"],
        languages=["en", "ja"],
        prompt="router",
    )


def _synthesis(seeds: Seeds, **spec: Any) -> Synthesis:
    teacher = Teacher(ProviderRegistry(), PriceTable(), "t", Budget())
    body = SynthesisSpec(teacher="t", description="Route inquiries.", **spec)
    return Synthesis(body, seeds, teacher, embedder=default_embedder())


def test_inputs_that_repeat_the_seeds_the_test_split_or_each_other_are_rejected() -> None:
    seeds = _seeds(
        [("How do I reset my password?", "technical"), ("請求書が二通届きました。", "billing")],
        held_out=[
            "My invoice shows a charge I do not recognise.",
            "設定を開くとエラーが出て閉じます。",
        ],
    )
    run = _synthesis(seeds)
    en, ja = Cell("billing", "en"), Cell("billing", "ja")
    fresh = [
        Row(en, "My invoice shows a charge that I don't recognise."),  # near the test split
        Row(en, "how do i reset my password?"),  # exact (case folded) of a seed
        Row(en, "Why was I billed twice this month?"),
        Row(en, "Why was I billed twice this month??"),  # near the one before
        Row(en, "Can I get a copy of last year's invoice?"),
        Row(ja, "設定を開くとエラーが出て閉じてしまいます。"),  # near the test split
        Row(ja, "今月の請求書が二通届きました"),  # near a seed
        Row(ja, "請求書が2回届いています。"),  # a rewording: kept
        Row(ja, "This is English in the Japanese cell."),
        Row(en, ""),
        Row(en, "..."),
        Row(en, "x" * 5000),
    ]
    kept = run._check_inputs(fresh)
    by_input = {r.input: r for r in fresh}
    assert {r.input for r in kept} == {
        "Can I get a copy of last year's invoice?",
        "請求書が2回届いています。",
        # one of the two near-identical questions stays
        next(
            r.input
            for r in fresh
            if r.input.startswith("Why was I billed") and r.status != "rejected"
        ),
    }
    reason = {t: r.reason for t, r in by_input.items()}
    assert reason["My invoice shows a charge that I don't recognise."] == "duplicate_of_test"
    assert reason["設定を開くとエラーが出て閉じてしまいます。"] == "duplicate_of_test"
    assert reason["how do i reset my password?"] == "duplicate_of_seed"
    assert reason["今月の請求書が二通届きました"] == "duplicate_of_seed"
    assert sorted(
        reason[t] or "kept"
        for t in ("Why was I billed twice this month?", "Why was I billed twice this month??")
    ) == ["duplicate", "kept"]
    assert reason["This is English in the Japanese cell."] == "language_mismatch"
    assert reason[""] == "empty_input" and reason["x" * 5000] == "too_long"
    assert reason["..."] == "too_short"
    assert by_input["how do i reset my password?"].detail.startswith("exact")
    # a later round's inputs are compared with this round's as well
    again = run._check_inputs([Row(en, "Can I get a copy of last year's invoice?")])
    assert again == [] and run.rows[-1].reason == "duplicate"


def test_the_plan_spreads_the_count_over_every_cell() -> None:
    plan = make_plan(["a", "b", "c"], ["en", "ja"], [], 20)
    assert len(plan) == 6 and sum(plan.values()) == 20
    assert sorted(plan.values()) == [3, 3, 3, 3, 4, 4]
    topics = make_plan([], ["en"], ["orders", "shipping"], 5)
    assert topics == {Cell(None, "en", "orders"): 3, Cell(None, "en", "shipping"): 2}


def test_a_budget_stops_at_its_first_cap() -> None:
    budget = Budget(max_usd=0.01, max_calls=10)
    for _ in range(3):
        assert budget.begin()
        budget.charge(0.004, Usage(100, 10))
    assert not budget.begin() and budget.reached == "max_usd"
    assert budget.spent.view() == {
        "calls": 3,
        "prompt_tokens": 300,
        "completion_tokens": 30,
        "usd": 0.012,
    }
    # calls count as they start: two in flight use up a cap of two before either finishes
    calls = Budget(max_calls=2)
    assert calls.begin() and calls.begin()
    assert not calls.begin() and calls.reached == "max_calls"
    calls.charge(None, Usage(1, 1))
    assert calls.spent.usd is None and calls.spent.calls == 1


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("How do I reset my password?", "en"),
        ("Où est ma facture ?", "en"),  # Latin script: not Japanese
        ("パスワードを忘れました", "ja"),
        ("経費精算", "ja"),  # Han only, no Hangul: Japanese is first-class here
        ("비밀번호를 잊었어요", "other"),
        ("Где мой счёт?", "other"),
        ("12345", "en"),
    ],
)
def test_language_of(text: str, language: str) -> None:
    assert language_of(text) == language


def test_the_inputs_an_eval_run_failed_become_examples_to_write_more_of() -> None:
    from distillery.curation.service import CurationService

    class Evals:
        def output_items(self, run_id: str) -> list[dict[str, Any]]:
            assert run_id == "evalrun_1"
            system = {"role": "system", "content": "Route the inquiry."}
            return [
                {"status": "fail", "sample": {"input": [system, {"role": "user", "content": "a"}]}},
                {"status": "pass", "sample": {"input": [system, {"role": "user", "content": "b"}]}},
                {"status": "fail", "sample": {"input": []}, "datasource_item": {"input": "c"}},
                {"status": "error", "sample": {"input": [{"role": "user", "content": "d"}]}},
            ]

    svc = CurationService(
        datasets=None,  # type: ignore[arg-type]
        completions=None,  # type: ignore[arg-type]
        providers=ProviderRegistry(),
        prices=PriceTable(),
        evals=Evals(),  # type: ignore[arg-type]
    )
    spec = SynthesisSpec(teacher="t", description="x", coverage={"failing_run_id": "evalrun_1"})
    assert svc._failing_inputs(spec) == ["a", "c"]
    assert svc._failing_inputs(SynthesisSpec(teacher="t", description="x")) == []


def test_a_description_in_another_language_than_the_seeds_is_a_warning() -> None:
    from distillery.curation.plan import load_seeds

    def item(seq: int, split: str, question: str, category: str) -> DatasetItem:
        messages = [
            {"role": "system", "content": "Route the inquiry."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": f'{{"category": "{category}"}}'},
        ]
        return DatasetItem(seq, "dsv_1", split, None, {"messages": messages}, False, 0)

    items = [
        item(1, "train", "My invoice is wrong.", "billing"),
        item(2, "train", "The app crashes.", "technical"),
        item(3, "test", "Why was I charged twice?", "billing"),
    ]
    spec = SynthesisSpec(teacher="t", description="問い合わせを担当部署に振り分ける。")
    seeds = load_seeds(items, None, spec)  # type: ignore[arg-type]  # no stored request to read
    assert seeds.languages == ["en"] and seeds.labels == []  # no schema: no label field known
    assert len(seeds.warnings) == 1 and "Japanese" in seeds.warnings[0]
    assert seeds.held_out == ["Why was I charged twice?"] and len(seeds.rows) == 2
    labelled = load_seeds(
        items,
        None,  # type: ignore[arg-type]
        SynthesisSpec(teacher="t", description="Route inquiries.", label_field="category"),
    )
    assert labelled.labels == ["billing", "technical"] and labelled.warnings == []


class _DyingTeacher:
    """An in-process teacher (the fake teacher's answers) that breaks on its Nth input batch."""

    name = kind = "dying"

    def __init__(self, die_on_batch: int) -> None:
        self.batches = 0
        self.die_on_batch = die_on_batch

    def models(self) -> list[Any]:
        return []

    def serves(self, model: str) -> bool:
        return model == "synth-teacher"

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        from tests.support.fakes import teacher

        name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        if name == "distillery_inputs":
            self.batches += 1
            if self.batches == self.die_on_batch:
                raise RuntimeError("the machine went away")
        text = teacher.answer(body)
        return {
            "id": "chatcmpl-same",  # a teacher that repeats an id: the records get their own
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }

    async def stream(self, body: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def test_rows_accepted_before_a_run_dies_are_kept() -> None:
    import asyncio

    from distillery.store.records import NewCompletion

    class Kept:
        def __init__(self) -> None:
            self.saved: list[NewCompletion] = []

        def save(self, records: list[NewCompletion]) -> None:
            self.saved.extend(records)

        def mark_dropped(self, completion_ids: list[str | None]) -> None:
            raise AssertionError("nothing is over quota here")

    schema = {
        "type": "object",
        "properties": {"category": {"type": "string", "enum": ["billing", "technical"]}},
    }
    seeds = _seeds(
        [
            ("Why was my invoice charged twice?", "billing"),
            ("The app shows an error message.", "technical"),
        ],
        held_out=[],
    )
    seeds.languages = ["en"]
    seeds.settings = {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
    provider = _DyingTeacher(die_on_batch=2)
    teacher = Teacher(
        ProviderRegistry({"dying": provider}), PriceTable(), "synth-teacher", Budget()
    )
    store = Kept()
    spec = SynthesisSpec(
        teacher="synth-teacher",
        description="Route inquiries.",
        n=40,
        inputs_per_call=8,
        concurrency=1,
    )
    run = Synthesis(spec, seeds, teacher, embedder=None, store=store)
    with pytest.raises(RuntimeError, match="went away"):
        asyncio.run(run.run())
    accepted = [r for r in run.rows if r.status == "accepted"]
    assert accepted and [r.id for r in store.saved] == [r.completion_id for r in accepted]
    assert len({r.id for r in store.saved}) == len(store.saved)  # never the teacher's own id
    assert all(
        r.metadata
        == {"origin": "synthetic", "synthesis_id": run.id, "synthesis_labels": "category"}
        for r in store.saved
    )
