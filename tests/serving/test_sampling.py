"""Sampling parameters, token choice and stop-string handling (no model needed)."""

from __future__ import annotations

import pytest

from distillery.errors import InvalidRequestError
from distillery.serving.sampling import (
    RowSampler,
    SamplingParams,
    TextAccumulator,
    choose_tokens,
    parse_sampling_params,
)


def chars(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def feed(acc: TextAccumulator, text: str) -> list[str]:
    deltas = []
    for ch in text:
        acc.push(ord(ch))
        deltas.append(acc.take_delta())
        if acc.stopped:
            break
    acc.finish()
    deltas.append(acc.take_delta(final=True))
    return deltas


def test_stop_string_cuts_the_text_and_is_never_streamed() -> None:
    acc = TextAccumulator(chars, ("END",))
    deltas = feed(acc, "hello ENDING")
    assert acc.stopped
    assert acc.text == "hello "
    assert "".join(deltas) == "hello "
    assert all("E" not in d for d in deltas)


def test_possible_stop_prefix_is_held_back_then_released() -> None:
    acc = TextAccumulator(chars, ("STOP",))
    deltas = feed(acc, "a STa")
    assert not acc.stopped
    assert "".join(deltas) == "a STa"
    assert deltas[:5] == ["a", " ", "", "", "STa"]  # "S", "ST" could start "STOP": held back


def test_earliest_of_several_stop_strings_wins() -> None:
    acc = TextAccumulator(chars, ("zz", "b"))
    feed(acc, "aabzz")
    assert acc.text == "aa"


def test_incomplete_characters_wait_for_their_last_byte() -> None:
    def decode(ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    acc = TextAccumulator(decode, ())
    out = []
    for byte in "日本".encode():
        acc.push(byte)
        out.append(acc.take_delta())
    assert out == ["", "", "日", "", "", "本"]


def test_parameters_are_validated_like_openai() -> None:
    params = parse_sampling_params(
        {"n": 2, "max_tokens": 9, "max_completion_tokens": 7, "temperature": 0, "stop": "x"}
    )
    assert params == SamplingParams(n=2, max_tokens=7, temperature=0.0, stop=("x",))
    assert params.greedy
    for body, param in [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"n": 129}, "n"),
        ({"stop": [1]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"logit_bias": {"a": 1}}, "logit_bias"),
        ({"logit_bias": {"1": 101}}, "logit_bias"),
    ]:
        with pytest.raises(InvalidRequestError) as info:
            parse_sampling_params(body)
        assert info.value.param == param


def test_seeds_are_reproducible_and_distinct_per_choice() -> None:
    params = SamplingParams(n=3, seed=42)
    assert params.choice_seeds() == params.choice_seeds()
    assert len(set(params.choice_seeds())) == 3
    assert SamplingParams(n=3, seed=43).choice_seeds() != params.choice_seeds()
    assert SamplingParams(n=2).choice_seeds() != SamplingParams(n=2).choice_seeds()


def test_choose_tokens_greedy_top_p_bias_and_seed() -> None:
    import torch

    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0]] * 4)
    greedy = RowSampler(SamplingParams(temperature=0), 1, 4)
    nucleus = RowSampler(SamplingParams(temperature=2.0, top_p=0.01), 2, 4)
    biased = RowSampler(SamplingParams(temperature=0, logit_bias=((3, 100.0),)), 3, 4)
    penalized = RowSampler(SamplingParams(temperature=0, presence_penalty=2.0), 4, 4)
    penalized.observe(1)
    picked = choose_tokens([greedy, nucleus, biased, penalized], logits.clone())
    assert picked == [1, 1, 3, 2]

    def draws(seed: int) -> list[int]:
        sampler = RowSampler(SamplingParams(temperature=1.0), seed, 4)
        return [choose_tokens([sampler], logits[:1].clone())[0] for _ in range(20)]

    assert draws(5) == draws(5)
    assert set(draws(5)) <= {0, 1, 2, 3}


def test_sampled_tokens_follow_the_distribution_and_never_a_masked_one() -> None:
    import torch

    probs = torch.tensor([0.5, 0.0, 0.3, 0.0, 0.2])
    logits = probs.log().expand(8, -1)  # log(0) = -inf: masked, as a grammar masks
    rows = [RowSampler(SamplingParams(temperature=1.0), seed, 5) for seed in range(8)]
    counts = torch.zeros(5)
    for _ in range(500):
        for token in choose_tokens(rows, logits.clone()):
            counts[token] += 1
    assert counts[1] == counts[3] == 0
    share = counts / counts.sum()  # 4,000 draws: 3 standard errors are under 0.025
    assert torch.allclose(share[[0, 2, 4]], probs[[0, 2, 4]], atol=0.025), share
