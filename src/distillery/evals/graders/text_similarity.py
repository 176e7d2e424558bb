"""``text_similarity``: a 0..1 similarity of input and reference (OpenAI's grader type).

Each metric is computed by the library made for it, never re-implemented:

- ``fuzzy_match``: ``rapidfuzz.fuzz.ratio(input, reference) / 100``, the normalized Indel
  similarity of the raw strings (character level, so it needs no tokenizer in any language).
- ``bleu``: ``sacrebleu.sentence_bleu(input, [reference]).score / 100`` (defaults: ``13a``
  tokenizer, ``exp`` smoothing, effective order).
- ``gleu``: ``nltk.translate.gleu_score.sentence_gleu`` over ``13a`` tokens (orders 1..4).
- ``meteor``: ``nltk.translate.meteor_score.meteor_score`` (alpha 0.9, beta 3, gamma 0.5, exact and
  Porter-stem matching). Its WordNet synonym stage needs nltk's ``wordnet`` data, which cannot be
  downloaded offline: when it is not installed that stage matches nothing (``details`` says
  ``"meteor_synonyms": false``) and the score is METEOR with exact and stem matches only.
- ``rouge_1`` .. ``rouge_5``: ``rouge_score.rouge_scorer.RougeScorer([...]).score`` F-measure,
  with rouge-score's default tokenizer and no stemming.
- ``rouge_l``: rouge-score's ROUGE-L F-measure, equal to the library's to the last bit (tests),
  on the same tokens and with its ``scoring.fmeasure``; only the LCS length is computed here, with
  the bit-parallel algorithm (:func:`lcs_length`) instead of rouge-score's pure-Python table,
  which managed 154 items/s on 200-token texts.
- ``cosine``: cosine of sentence embeddings (see ``semantic.py``).

When either text contains kana or Han characters both are first segmented into morphemes with
fugashi + unidic-lite (``distillery.text.tokenize``): BLEU then runs sacrebleu with
``tokenize="none"`` on the space-joined morphemes, ROUGE uses a morpheme tokenizer (lowercased,
punctuation dropped, as rouge-score does for English), GLEU and METEOR take the morphemes.
English scores are therefore identical to the reference libraries', and Japanese is scored on
real words rather than 0. (sacrebleu's own ``ja-mecab`` tokenizer needs the ``sacrebleu[ja]``
extra and its ``ipadic`` dictionary; fugashi with unidic-lite gives the same kind of split.)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from distillery.embedders import Embedder
from distillery.evals.graders.base import Grade, GradeInput, GraderConfig, score_passed
from distillery.evals.graders.semantic import clip01, embedding_similarity
from distillery.evals.graders.templating import render
from distillery.text.lang import needs_segmentation
from distillery.text.tokenize import SegmentingTokenizer, segment, word_tokens

EvaluationMetric = Literal[
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "cosine",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
]
ROUGE_TYPES: dict[str, str] = {f"rouge_{n}": f"rouge{n}" for n in range(1, 6)} | {
    "rouge_l": "rougeL"
}
SEGMENTER = "fugashi+unidic-lite"


class TextSimilarityConfig(GraderConfig):
    type: Literal["text_similarity"] = "text_similarity"
    name: str
    input: str
    reference: str
    evaluation_metric: EvaluationMetric
    # required in an eval's testing_criteria (``evals.runner.build_graders`` checks it), not in
    # OpenAI's grader object (RFT, a ``multi`` grader, the grader API): there ``passed`` is None
    pass_threshold: float | None = None


class _NoSynonyms:
    """Stands in for nltk's WordNet reader when its data is not installed: no synonyms."""

    def synsets(self, lemma: str) -> list[Any]:
        return []


@functools.cache
def _wordnet() -> tuple[Any, bool]:
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
    except LookupError:
        return _NoSynonyms(), False
    return wordnet, True


def fuzzy_match(text: str, reference: str) -> float:
    from rapidfuzz import fuzz

    return float(fuzz.ratio(text, reference)) / 100.0


@functools.cache
def _bleu(tokenize: str) -> Any:
    from sacrebleu.metrics.bleu import BLEU

    # The exact configuration of ``sacrebleu.sentence_bleu``'s defaults.
    return BLEU(tokenize=tokenize, smooth_method="exp", effective_order=True)


def bleu(text: str, reference: str, *, segmented: bool) -> float:
    if segmented:
        hyp, ref = " ".join(segment(text)), " ".join(segment(reference))
        return float(_bleu("none").sentence_score(hyp, [ref]).score) / 100.0
    return float(_bleu("13a").sentence_score(text, [reference]).score) / 100.0


def gleu(text: str, reference: str, *, segmented: bool) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    hyp = word_tokens(text, segmented=segmented)
    ref = word_tokens(reference, segmented=segmented)
    return float(sentence_gleu([ref], hyp))


def meteor(text: str, reference: str, *, segmented: bool) -> float:
    from nltk.translate.meteor_score import meteor_score

    hyp = word_tokens(text, segmented=segmented)
    ref = word_tokens(reference, segmented=segmented)
    if not hyp or not ref:
        return 0.0
    synonyms, _ = _wordnet()
    return float(meteor_score([ref], hyp, wordnet=synonyms, alpha=0.9, beta=3.0, gamma=0.5))


@functools.cache
def _rouge_scorer(rouge_type: str, segmented: bool) -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    if segmented:
        return RougeScorer([rouge_type], tokenizer=SegmentingTokenizer())
    return RougeScorer([rouge_type])


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences.

    Bit-parallel (Allison & Dix 1986, in Hyyrö's form): bit ``i`` of ``v`` tracks row ``i`` of
    the LCS table, so each token of the shorter sequence costs a few big-integer operations
    instead of one Python step per cell.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        m = masks.get(token)
        if m is not None:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


@functools.cache
def _rouge_tokenizer(segmented: bool) -> Any:
    from rouge_score.tokenizers import DefaultTokenizer

    return SegmentingTokenizer() if segmented else DefaultTokenizer(use_stemmer=False)


def rouge_l(text: str, reference: str, *, segmented: bool) -> float:
    """rouge-score's ``rougeL`` F-measure (its ``_score_lcs``, with a fast LCS length)."""
    from rouge_score.scoring import fmeasure

    tokenizer = _rouge_tokenizer(segmented)
    target, prediction = tokenizer.tokenize(reference), tokenizer.tokenize(text)
    if not target or not prediction:
        return 0.0
    lcs = lcs_length(target, prediction)
    return float(fmeasure(lcs / len(prediction), lcs / len(target)))


def rouge(metric: str, text: str, reference: str, *, segmented: bool) -> float:
    if metric == "rouge_l":
        return rouge_l(text, reference, segmented=segmented)
    rouge_type = ROUGE_TYPES[metric]
    scores = _rouge_scorer(rouge_type, segmented).score(reference, text)  # (target, prediction)
    return float(scores[rouge_type].fmeasure)


def lexical_similarity(metric: str, text: str, reference: str) -> tuple[float, dict[str, object]]:
    """Score of a non-embedding ``metric``, with how the texts were tokenized."""
    if metric == "fuzzy_match":
        return fuzzy_match(text, reference), {"tokenization": "characters"}
    segmented = needs_segmentation(text, reference)
    details: dict[str, object] = {"tokenization": SEGMENTER if segmented else "default"}
    match metric:
        case "bleu":
            score = bleu(text, reference, segmented=segmented)
        case "gleu":
            score = gleu(text, reference, segmented=segmented)
        case "meteor":
            score = meteor(text, reference, segmented=segmented)
            details["meteor_synonyms"] = _wordnet()[1]
        case _:
            score = rouge(metric, text, reference, segmented=segmented)
    return score, details


class TextSimilarityGrader:
    type: ClassVar[str] = "text_similarity"

    def __init__(self, config: TextSimilarityConfig, *, embedder: Embedder) -> None:
        self.config = config
        self.name = config.name
        self._embedder = embedder

    async def grade(self, inp: GradeInput) -> Grade:
        text = render(self.config.input, inp)
        reference = render(self.config.reference, inp)
        metric = self.config.evaluation_metric
        details: dict[str, object]
        if metric == "cosine":
            raw = await embedding_similarity(self._embedder, text, reference)
            score, details = clip01(raw), {"cosine": raw}
        else:
            score, details = lexical_similarity(metric, text, reference)
        details = {"evaluation_metric": metric, **details}
        return Grade(
            score=score, passed=score_passed(score, self.config.pass_threshold), details=details
        )
