"""The parts of reinforcement fine-tuning that need no model: advantages, rewards from the
evals' graders (grading failures included), the rows' checks and the automatic settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.errors import InvalidRequestError
from distillery.evals.graders.python_grader import sandbox_available
from distillery.training.local.grpo import advantages
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
