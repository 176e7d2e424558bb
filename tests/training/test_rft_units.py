"""The parts of reinforcement fine-tuning that need no model: advantages, rewards from the
evals' graders (grading failures included), the rows' checks and the automatic settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distillery.errors import InvalidRequestError
from distillery.evals.graders.python_grader import sandbox_available
from distillery.training.local.grpo import LocalRFTTrainer, _Run, advantages, focus_prompts
from distillery.training.local.rewards import Rewards, judge_models, judged_graders
from distillery.training.local.rft_config import LocalRFTConfig
from distillery.training.local.rft_data import check_prompts

CHECK = {
    "type": "string_check",
    "name": "category",
    "input": "{{sample.output_json.category}}",
    "reference": "{{item.label}}",
    "operation": "eq",
}


def test_advantages_are_relative_to_the_group() -> None:
    adv = advantages([1.0, 0.0, 0.0, 1.0])
    assert adv[0] == pytest.approx(-adv[1]) and adv[0] > 0.99  # one std above the mean
    assert sum(adv) == pytest.approx(0.0)
    assert advantages([0.5, 0.5, 0.5]) == [0.0, 0.0, 0.0]  # nothing to learn from


def test_rewards_come_from_the_evals_graders() -> None:
    rewards = Rewards(CHECK)
    try:
        got = rewards.score(
            [{"label": "IT"}, {"label": "IT"}, {"label": "経理"}],
            ['{"category": "IT"}', '{"category": "総務"}', "not json"],
        )
    finally:
        rewards.close()
    assert [r.value for r in got] == [1.0, 0.0, 0.0]
    assert [r.passed["category"] for r in got] == [True, False, False]


def test_a_multi_grader_reports_each_sub_grader() -> None:
    grader = {
        "type": "multi",
        "name": "route",
        "graders": {
            "category": CHECK,
            "json": {"type": "valid_json", "name": "json", "input": "{{sample.output_text}}"},
        },
        "calculate_output": "0.8 * category + 0.2 * json",
    }
    rewards = Rewards(grader)
    try:
        got = rewards.score([{"label": "IT"}] * 2, ['{"category": "IT"}', '{"category": "x"}'])
    finally:
        rewards.close()
    assert [r.value for r in got] == pytest.approx([1.0, 0.2])
    assert got[1].passed == {"route": False, "category": False, "json": True}


@pytest.mark.skipif(not sandbox_available(), reason="no namespace sandbox on this machine")
def test_a_grader_that_fails_counts_as_zero_and_says_why() -> None:
    source = (
        "def grade(sample, item):\n"
        "    if item['boom']:\n"
        "        raise ValueError('no reward for you')\n"
        "    return 1.0\n"
    )
    rewards = Rewards({"type": "python", "name": "py", "source": source})
    try:
        got = rewards.score([{"boom": False}, {"boom": True}], ["a", "b"])
    finally:
        rewards.close()
    assert got[0].value == 1.0 and got[0].error is None
    assert got[1].value == 0.0 and got[1].error and "no reward for you" in got[1].error


def test_judged_graders_are_found_inside_multi() -> None:
    judge = {"type": "score_model", "name": "j", "model": "judge-pass", "input": []}
    multi = {"type": "multi", "graders": {"c": CHECK, "j": judge}, "calculate_output": "c + j"}
    assert judged_graders(multi) == ["score_model"] and judge_models(multi) == ["judge-pass"]
    assert judged_graders(CHECK) == [] and judge_models(CHECK) == []


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path


def test_rows_are_prompts_with_the_fields_the_grader_reads(tmp_path: Path) -> None:
    prompt = [{"role": "user", "content": "VPNが繋がらない"}]
    good = _write(tmp_path / "good.jsonl", [{"messages": prompt, "label": "IT"}] * 3)
    assert check_prompts(good, {"label"}) == 3
    with pytest.raises(InvalidRequestError) as err:
        check_prompts(good, {"label", "lang"})
    assert err.value.param == "method.reinforcement.grader" and "item.lang" in err.value.message
    answered = [{"messages": [*prompt, {"role": "assistant", "content": "IT"}], "label": "IT"}]
    with pytest.raises(InvalidRequestError) as err:
        check_prompts(_write(tmp_path / "a.jsonl", answered), set())
    assert err.value.param == "training_file" and "line 1" in err.value.message
    with pytest.raises(InvalidRequestError):
        check_prompts(_write(tmp_path / "b.jsonl", [{"prompt": "x"}]), set())


def test_auto_settings_follow_the_number_of_prompts() -> None:
    config = LocalRFTConfig(grader=CHECK)
    small = config.resolve_rft(5)
    assert (small.batch_size, small.n_epochs, small.eval_interval, small.eval_samples) == (
        5,
        10,
        1,
        1,
    )
    big = config.resolve_rft(578)
    assert (big.batch_size, big.n_epochs, big.eval_interval) == (8, 1, 73)
    assert big.peak_learning_rate == pytest.approx(5e-5)
    assert config.samples_per_prompt == 4
    assert LocalRFTConfig(grader=CHECK, compute_multiplier=2.0).samples_per_prompt == 8
    with pytest.raises(ValueError):
        LocalRFTConfig(grader=CHECK, method="full", start_adapter="/x")


class _Weights:
    """What the best-step choice touches of a student: its trainable parameters."""

    def __init__(self) -> None:
        import torch

        self.model = torch.nn.Linear(2, 1, bias=False)


def _chooser(tmp_path: Path, scores: dict[int, float]) -> tuple[LocalRFTTrainer, list[Any]]:
    """A trainer with no model behind it: the parameter's value is the step it was saved at."""
    trainer = LocalRFTTrainer.__new__(LocalRFTTrainer)
    events: list[Any] = []
    trainer.output_dir = tmp_path
    trainer.valid_prompts = ["a validation prompt"]  # type: ignore[list-item]
    trainer.config = LocalRFTConfig(grader=CHECK)
    trainer.student = _Weights()  # type: ignore[assignment]
    trainer.emit = lambda kind, message, data=None, **_: events.append((message, data))  # type: ignore[method-assign]
    trainer._evaluate = lambda step: {"valid_reward_mean": scores[step]}  # type: ignore[method-assign]
    return trainer, events


def _train_to(trainer: LocalRFTTrainer, run: _Run, step: int) -> None:
    import torch

    with torch.no_grad():
        trainer.student.model.weight.fill_(float(step))
    run.step = step


@pytest.mark.parametrize(
    ("scores", "evaluated", "kept"),
    [
        ({0: 0.5, 2: 0.8, 4: 0.6}, [0, 2, 4], 2),  # a better step, then a worse one
        ({0: 0.5, 2: 0.4, 4: 0.5}, [0, 2, 4], 0),  # nothing beats the start: a tie keeps it
        ({0: 0.5, 2: 0.6, 4: 0.7}, [0, 2, 4], 4),  # the last is the best
        ({0: 0.5, 2: 0.6, 3: 0.9}, [0, 2], 3),  # ended between evaluations: evaluated once more
    ],
)
def test_the_run_keeps_its_best_step_on_the_validation_prompts(
    tmp_path: Path, scores: dict[int, float], evaluated: list[int], kept: int
) -> None:
    trainer, events = _chooser(tmp_path, scores)
    run = _Run(total_steps=4, prompts=[0])
    for step in evaluated:
        _train_to(trainer, run, step)
        trainer._track(run, step, scores[step])
    _train_to(trainer, run, max(scores))
    assert trainer._keep_best(run) == kept
    assert float(trainer.student.model.weight.detach()[0, 0]) == kept  # those weights are back
    selection = events[-1][1]["selection"]
    assert selection["chosen_step"] == kept
    assert [p["step"] for p in selection["curve"]] == sorted(scores)


def test_a_best_replaced_after_the_last_checkpoint_is_chosen_again(tmp_path: Path) -> None:
    trainer, events = _chooser(tmp_path, {0: 0.5, 2: 0.9})
    run = _Run(total_steps=4, prompts=[0])
    trainer._track(run, 0, 0.5)
    resumed = _Run(total_steps=4, prompts=[0], best_step=0, curve=[(0, 0.5)])
    _train_to(trainer, run, 2)
    trainer._track(run, 2, 0.9)  # written after the checkpoint the run resumes from
    trainer._check_best_after_resume(resumed)
    assert resumed.best_step is None and "chosen again" in events[-1][0]


def test_a_capped_focus_takes_the_unsolved_first() -> None:
    import random

    unsolved, solved = list(range(38)), list(range(100, 597))

    def focus(cap: int | None, share: float = 0.1) -> tuple[int, int]:
        kept = focus_prompts(
            unsolved, solved, solved_share=share, max_prompts=cap, rng=random.Random(1)
        )
        assert len(set(kept[0]) | set(kept[1])) == len(kept[0]) + len(kept[1])
        return len(kept[0]), len(kept[1])

    assert focus(None) == (38, 50)  # every unsolved, a tenth of the solved
    assert focus(32) == (29, 3)  # the cap: a tenth of the room for the solved
    assert focus(48) == (38, 10)  # the unsolved all fit: the solved fill the rest
    assert focus(48, share=0.0) == (38, 0)
    assert focus_prompts([], solved, solved_share=0.1, max_prompts=8, rng=random.Random(1))[1]
