"""The task's own measure and the checkpoint choice (``measure.py``, ``selection.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distillery import chat_templates
from distillery.training.local.config import LocalSFTConfig
from distillery.training.local.data import IGNORE_INDEX, TokenizedExample
from distillery.training.local.measure import (
    MeasureScorer,
    TaskMeasure,
    infer_measure,
    score_answers,
    settled,
)
from distillery.training.local.selection import Point, choose, explain, hold_out, should_stop

pytestmark = pytest.mark.training

END = "<|im_end|>"


def routed(reason: str, category: str) -> str:
    return json.dumps({"reason": reason, "category": category}, ensure_ascii=False) + END


def test_label_fields_are_found_and_free_text_is_not() -> None:
    answers = [routed(f"reason number {i}", ["経理", "人事", "総務"][i % 3]) for i in range(30)]
    measure = infer_measure(answers)
    assert measure == TaskMeasure("fields", ("category",), 3, generate=True)
    assert measure.metric == "valid_field_match"
    assert "'category'" in measure.describe()


def test_intents_with_slots_score_both_fields() -> None:
    answers = [
        json.dumps({"intent": f"intent_{i % 7}", "slots": {"city": f"city {i}"}}) for i in range(21)
    ]
    measure = infer_measure(answers)
    assert measure.kind == "fields" and measure.fields == ("intent", "slots")
    assert measure.n_labels == 7


def test_plain_labels_free_text_and_named_fields() -> None:
    assert infer_measure(["positive", "negative", "positive", "negative"]).kind == "answer"
    assert infer_measure([f"a different sentence {i}" for i in range(10)]).kind == "tokens"
    named = infer_measure([routed("x", "経理"), routed("y", "人事")], fields=["reason"])
    assert named.fields == ("reason",) and named.kind == "fields"


def example(tokenizer: Any, answer: str, prompt: int = 5) -> TokenizedExample:
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    prompt_ids = [1] * prompt
    return TokenizedExample(
        prompt_ids + ids, [IGNORE_INDEX] * prompt + ids, answer=answer, answer_tokens=len(ids)
    )


def test_a_field_matches_when_each_of_its_tokens_is_the_first_choice(tokenizer: Any) -> None:
    measure = TaskMeasure("fields", ("category",), 5)
    ex = example(tokenizer, routed("経費の話なので経理です。", "情報システム"))
    scorer = MeasureScorer(measure, [ex], tokenizer)
    lo, hi = scorer.spans[id(ex)]["category"]
    n = ex.n_target_tokens
    decoded = tokenizer.decode(ex.input_ids[ex.n_tokens - ex.answer_tokens :][lo:hi])
    assert "情報システム" in decoded and "reason" not in decoded
    answer_start = n - ex.answer_tokens
    all_right = [True] * n
    assert scorer.score([ex], [all_right]).score == 1.0
    wrong_reason = list(all_right)
    wrong_reason[answer_start + 3] = False  # a token of the reason: the label still matches
    assert scorer.score([ex], [wrong_reason]).score == 1.0
    wrong_label = list(all_right)
    wrong_label[answer_start + hi - 1] = False  # the label's last token
    totals = scorer.score([ex], [wrong_label])
    assert totals.score == 0.0
    assert scorer.metrics(totals) == {"valid_field_match": 0.0, "valid_match_category": 0.0}


def test_exact_answer_and_token_accuracy(tokenizer: Any) -> None:
    ex = example(tokenizer, "positive" + END)
    n = ex.n_target_tokens
    misses = [True] * (n - 1) + [False]  # the end-of-turn token missed: not an exact answer
    exact = MeasureScorer(TaskMeasure("answer"), [ex], tokenizer)
    assert exact.score([ex], [misses]).score == 0.0
    assert exact.score([ex], [[True] * n]).score == 1.0
    tokens = MeasureScorer(TaskMeasure("tokens"), [ex], tokenizer)
    assert tokens.score([ex], [misses]).score == pytest.approx((n - 1) / n)


def test_the_best_epoch_wins_and_ties_go_to_the_lower_loss() -> None:
    curve = [Point(0, 0.2, 2.0), Point(1, 0.8, 0.9), Point(2, 0.9, 0.7), Point(3, 0.9, 0.6)]
    assert choose(curve).epoch == 3
    assert not should_stop(curve, 1)
    falling = [*curve, Point(4, 0.85, 0.65)]
    assert should_stop(falling, 1) and not should_stop(falling, 2)
    assert not should_stop(falling, 0)  # patience 0: never stop early
    text = explain(falling, choose(falling), TaskMeasure("answer"), stopped_after=4)
    assert "epoch 3 of 4" in text and "stopped early after epoch 4" in text


def test_the_base_model_is_kept_when_no_epoch_beats_it() -> None:
    curve = [Point(0, 0.5, 1.0), Point(1, 0.4, 0.9), Point(2, 0.5, 1.1)]
    chosen = choose(curve)
    assert chosen.epoch == 0
    assert "did not learn the task" in explain(
        curve, chosen, TaskMeasure("answer"), stopped_after=None
    )


def test_hold_out_covers_the_labels_and_keeps_one_of_each() -> None:
    labels = ["a"] * 40 + ["b"] * 40 + ["c"] * 2 + ["d"]
    examples = [
        TokenizedExample([1, 2], [IGNORE_INDEX, 2], answer=json.dumps({"y": y}), answer_tokens=1)
        for y in labels
    ]
    measure = TaskMeasure("fields", ("y",), 4)
    kept, held = hold_out(examples, 10, measure, seed=3)
    assert len(held) == 10 and len(kept) == len(examples) - 10
    held_labels = [json.loads(e.answer)["y"] for e in held]
    assert {"a", "b", "c"} <= set(held_labels) and "d" not in held_labels
    assert held_labels.count("c") == 1  # "c" keeps one example for training
    assert hold_out(examples, 10, measure, seed=3) == (kept, held)  # deterministic


@pytest.mark.usefixtures("training_home")
def test_without_a_validation_file_examples_are_held_out_and_base_can_be_kept(
    tmp_path: Path,
) -> None:
    """No validation file: ``holdout`` examples choose the checkpoint; keeping epoch 0 writes an
    adapter that adds nothing (the base model)."""
    from safetensors.torch import load_file

    from distillery.training.local.trainer import LocalSFTTrainer

    from .chat_files import QUESTIONS, chat_record, write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(q, c) for q, c in QUESTIONS])
    config = LocalSFTConfig(holdout=4, max_length=128, threads=1, bf16=False)
    events: list[tuple[str, dict[str, Any] | None]] = []
    trainer = LocalSFTTrainer(
        config, train, None, tmp_path / "out", emit=lambda t, _l, m, d: events.append((m, d))
    )
    trainer._setup_runtime()
    trainer._load_data()
    assert len(trainer.train_data.examples) == 8 and trainer.valid_data is not None
    assert len(trainer.valid_data.examples) == 4 and trainer.selecting
    assert any("Held out 4 of the 12" in m for m, _ in events)
    assert trainer.measure.fields == ("reason", "category")  # both repeat with the label
    trainer._load_model()
    metrics = trainer._validation_metrics()
    assert metrics["valid_loss"] > 0 and 0 <= metrics["valid_field_match"] <= 1
    adapter = trainer._write_kept(0, last=1)
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    b = [v for k, v in tensors.items() if "lora_B" in k]
    assert b and all(not v.any() for v in b)


def test_free_text_before_the_label_is_scored_on_greedy_answers() -> None:
    """A reason that differs per answer, then the category: teacher forcing would read the label
    after the reference reason, so the measure generates."""
    answers = [
        routed(f"question {i} asks about this topic", "経理人事総務"[i % 3]) for i in range(30)
    ]
    measure = infer_measure(answers)
    assert measure.fields == ("category",) and measure.generate
    assert "greedy answers" in measure.describe() and measure.to_json()["generate"] is True
    intents = [json.dumps({"intent": f"i{i % 5}", "text": f"free text {i}"}) for i in range(30)]
    assert not infer_measure(intents).generate  # the label comes first: teacher forcing is greedy
    references = [routed("a", "経理"), routed("b", "人事"), "not json", routed("c", "総務")]
    generated = [
        '{"reason": "other words", "category": "経理"}<|im_end|>',  # the label is what counts
        '{"reason": "b", "category": "総務"}',
        "anything",
        '{"reason": "c", "categ',  # cut off: matches nothing
    ]
    totals = score_answers(TaskMeasure("fields", ("category",), 3, True), references, generated)
    assert (totals.scored, totals.score) == (3, 1 / 3)
    assert totals.field_hits == {"category": 1} and totals.field_seen == {"category": 3}


@pytest.mark.usefixtures("training_home")
def test_greedy_answers_in_batches_match_one_prompt_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The validation measure's greedy answers (left-padded batches of prompts of different
    lengths, continuing from the shared system prompt's cache or not, the model switched from
    packed attention to the cache and back) are those the model writes to each prompt alone; a
    row stopped once its text is settled is the start of that answer."""
    import torch

    from distillery.training.local import greedy, packing
    from distillery.training.local.packing import PACKED_ATTENTION
    from distillery.training.local.trainer import LocalSFTTrainer

    from .chat_files import QUESTIONS, SYSTEM, write_jsonl

    system = (
        SYSTEM + " The categories are 経理, 人事, 総務, 労務 and 情報システム; explain why first."
    )

    def record(question: str, label: str) -> dict[str, Any]:
        reason = f"The question '{question}' is about {label}."
        answer = json.dumps({"reason": reason, "category": label}, ensure_ascii=False)
        return {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        }

    train = write_jsonl(tmp_path / "train.jsonl", [record(q, c) for q, c in QUESTIONS])
    config = LocalSFTConfig(holdout=4, max_length=160, threads=1, bf16=False)
    trainer = LocalSFTTrainer(config, train, None, tmp_path / "out", emit=lambda *_: None)
    trainer._setup_runtime()
    trainer._load_data()
    assert trainer.measure.fields == ("category",) and trainer.measure.generate
    trainer._load_model()
    examples = trainer.valid_data.examples if trainer.valid_data else []
    prompts = [greedy.prompt_ids(ex) for ex in examples]
    assert len({len(p) for p in prompts}) > 1 and packing.shared_prefix_length(examples) >= 32

    def answers(**kwargs: Any) -> list[str]:
        return greedy.greedy_answers(
            trainer.student,
            trainer.tokenizer,
            examples,
            device="cpu",
            autocast=trainer._autocast,
            **kwargs,
        )

    monkeypatch.setattr(greedy, "MARGIN", 0)  # answers as long as the longest reference
    cached = answers()
    settled_early = answers(finished=lambda text: len(text) >= 12)
    monkeypatch.setattr(packing, "MIN_SHARED_PREFIX", 10_000)  # no shared-prefix cache
    plain = answers()
    assert trainer.causal_lm.config._attn_implementation == PACKED_ATTENTION  # restored
    model = trainer.student.model
    model.config.use_cache = True
    trainer.causal_lm.set_attn_implementation("sdpa")
    model.eval()
    longest = max(ex.answer_tokens for ex in examples)
    # alone: the shortest prompt (the most padding in its batch) and the longest (none)
    ends = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for k in (ends[0], ends[-1]):
        prompt, one, two, short = prompts[k], cached[k], plain[k], settled_early[k]
        with torch.no_grad():
            alone = model.generate(
                input_ids=torch.tensor([prompt]),
                max_new_tokens=longest + greedy.MARGIN,
                do_sample=False,
                eos_token_id=sorted(chat_templates.end_of_turn_ids(trainer.tokenizer)),
            )
        expected = trainer.tokenizer.decode(alone[0, len(prompt) :], skip_special_tokens=True)
        assert one == two == expected
        # (a row may stop inside a character: its last bytes decode as U+FFFD)
        assert expected.startswith(short.rstrip("\ufffd"))
        assert len(short) >= 12 or short == expected
    trainer.causal_lm.set_attn_implementation(PACKED_ATTENTION)
    model.config.use_cache = False
    model.train()
    metrics = trainer._validation_metrics()  # the measure from greedy answers
    assert 0 <= metrics["valid_field_match"] <= 1 and metrics["valid_match_category"] is not None


def test_an_answer_is_settled_once_its_object_closes_or_cannot_open() -> None:
    assert not settled("") and not settled("  ") and not settled('{"reason": "a", "cat')
    assert settled('{"reason": "a", "category": "経理"}') and settled('{"a": 1} and more')
    assert settled("Sure! Here is") and settled("```json")  # not an object: nothing to wait for
