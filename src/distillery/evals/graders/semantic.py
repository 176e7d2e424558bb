"""``semantic_similarity`` (distillery): cosine of sentence embeddings of input and reference.

The same computation backs ``text_similarity`` with ``evaluation_metric: "cosine"``: OpenAI embeds
with its embedding models, distillery with the local all-MiniLM-L6-v2 (``distillery.embedders``)
unless another ``Embedder`` is bound. Embedding runs in a worker thread so the event loop stays
free. The score is the cosine clipped to [0, 1] (the raw value, which can be slightly negative
for unrelated texts, is kept in ``details["cosine"]``).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal

from distillery.embedders import Embedder, cosine
from distillery.evals.graders.base import Grade, GradeInput, GraderConfig, score_passed
from distillery.evals.graders.templating import render


class SemanticSimilarityConfig(GraderConfig):
    type: Literal["semantic_similarity"] = "semantic_similarity"
    name: str = "semantic_similarity"
    input: str = "{{sample.output_text}}"
    reference: str
    pass_threshold: float


async def embedding_similarity(embedder: Embedder, text: str, reference: str) -> float:
    """Raw cosine similarity of the embeddings of ``text`` and ``reference``."""
    if text == reference:
        return 1.0
    vectors = await asyncio.to_thread(embedder.embed, [text, reference])
    return cosine(vectors[0], vectors[1])


def clip01(value: float) -> float:
    return min(1.0, max(0.0, value))


class SemanticSimilarityGrader:
    type: ClassVar[str] = "semantic_similarity"

    def __init__(self, config: SemanticSimilarityConfig, *, embedder: Embedder) -> None:
        self.config = config
        self.name = config.name
        self._embedder = embedder

    async def grade(self, inp: GradeInput) -> Grade:
        text = render(self.config.input, inp)
        reference = render(self.config.reference, inp)
        raw = await embedding_similarity(self._embedder, text, reference)
        score = clip01(raw)
        return Grade(
            score=score,
            passed=score_passed(score, self.config.pass_threshold),
            details={"cosine": raw, "pass_threshold": self.config.pass_threshold},
        )
