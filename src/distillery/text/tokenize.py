"""Word tokens for text metrics, in one place for Japanese and English.

- Spaced text (English...): the tokenization of the reference library. BLEU is left to sacrebleu's
  own ``13a`` tokenizer and ROUGE to rouge-score's default tokenizer, so scores are identical to
  theirs; metrics that take token lists (nltk's GLEU and METEOR) get ``13a`` tokens
  (:func:`word_tokens`), the tokenization BLEU uses.
- Text with kana or Han characters: morphemes from fugashi (MeCab) with the offline
  ``unidic-lite`` dictionary, after NFKC normalization. "有給休暇の申請方法を教えてください。"
  becomes 有給 / 休暇 / の / 申請 / 方法 / を / 教え / て / ください / 。 and is scored on those
  real words instead of one unsplittable "word" (sacrebleu's ``13a`` gives BLEU 0 and rouge-score
  drops every non-ASCII character).

The MeCab tagger is created once per process and shared behind a lock (a tagger is not safe to
call from two threads at once).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass

from distillery.text.normalize import is_punctuation_or_symbol, nfkc

_tagger_lock = threading.Lock()


@dataclass(frozen=True)
class Morpheme:
    surface: str  # the text as written (after NFKC)
    lemma: str  # dictionary form ("良く" -> "良い"); the surface when the dictionary has none
    pos: str  # major part of speech in UniDic terms ("名詞", "動詞", "助動詞", "補助記号"...)


@functools.cache
def _tagger() -> Callable[[str], list[object]]:
    import fugashi
    import unidic_lite

    tagger: Callable[[str], list[object]] = fugashi.Tagger(f'-d "{unidic_lite.DICDIR}"')
    return tagger


def morphemes(text: str) -> list[Morpheme]:
    """Morphological analysis of ``text`` (NFKC-normalized) with fugashi + unidic-lite."""
    normalized = nfkc(text)
    with _tagger_lock:
        nodes = _tagger()(normalized)
        result = [_morpheme(node) for node in nodes]
    return [m for m in result if m.surface.strip()]


def _morpheme(node: object) -> Morpheme:
    surface = str(getattr(node, "surface", ""))
    feature = getattr(node, "feature", None)
    lemma = getattr(feature, "lemma", None) or surface
    pos = getattr(feature, "pos1", None) or ""
    return Morpheme(surface=surface, lemma=str(lemma), pos=str(pos))


def segment(text: str) -> list[str]:
    """Surface forms of the morphemes of ``text``: the words of a Japanese sentence."""
    return [m.surface for m in morphemes(text)]


def tokens_13a(text: str) -> list[str]:
    """sacrebleu's ``13a`` tokenization (mteval-v13a): punctuation split off, case kept."""
    return _tokenizer_13a()(text).split()


@functools.cache
def _tokenizer_13a() -> Callable[[str], str]:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokenizer: Callable[[str], str] = Tokenizer13a()  # type: ignore[no-untyped-call]
    return tokenizer


def word_tokens(text: str, *, segmented: bool) -> list[str]:
    """Tokens for metrics over token lists: morphemes when ``segmented``, else ``13a`` tokens."""
    return segment(text) if segmented else tokens_13a(text)


def rouge_tokens(text: str) -> list[str]:
    """Segmented tokens the way rouge-score treats words: lowercased, punctuation dropped."""
    return [t.lower() for t in segment(text) if not is_punctuation_or_symbol(t)]


class SegmentingTokenizer:
    """A rouge-score tokenizer (duck-typed ``tokenize``) for text with CJK characters."""

    def tokenize(self, text: str) -> list[str]:
        return rouge_tokens(text)
