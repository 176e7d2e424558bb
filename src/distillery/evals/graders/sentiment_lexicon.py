"""Offline sentiment of English and Japanese text: a small lexicon scorer in the style of VADER.

How a text is scored:

1. Language: Japanese when it has kana (or Han without Hangul), else English.
2. Tokens: English words lowercased and Porter-stemmed (nltk, no data needed); Japanese morphemes
   from fugashi + unidic-lite, matched on their dictionary forms (良く -> 良い). Punctuation splits
   clauses; negation and boosters act only inside a clause.
3. Terms (``lexicons/sentiment_<lang>.json``, valence -3..+3, single words or phrases, longest
   match first) add their valence, scaled by a booster right before them ("very", とても: x1.3,
   "slightly", 少し: x0.7).
4. Negation flips and damps a term (x -0.74, VADER's factor): in English when a negator ("not",
   "never", "no", any "n't") is among the three words before it ("not good", "no problem"); in
   Japanese when a negating auxiliary (ない, ず, ぬ, 無し) follows it through particles,
   auxiliaries and ある/いる/する/なる ("良くない", "問題ありません", "便利ではない").
5. A contrast word ("but", "however", しかし, けど...) halves what comes before it and weighs what
   follows by 1.5, as VADER does for "but".
6. The sum ``s`` is normalized to ``compound = s / sqrt(s^2 + 15)`` in [-1, 1]: positive at
   >= 0.05, negative at <= -0.05, else neutral.

It is transparent (``matches`` says which terms counted) and fast, but it does not understand
sarcasm or domain words outside its lexicon; bind a judge ``model`` for that.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from distillery.text.lang import is_japanese
from distillery.text.normalize import is_punctuation_or_symbol
from distillery.text.tokenize import morphemes

if TYPE_CHECKING:
    from nltk.stem.porter import PorterStemmer

Language = Literal["en", "ja"]
SentimentLabel = Literal["positive", "neutral", "negative"]
NEGATION_SCALE = -0.74
THRESHOLD = 0.05
EN_NEGATION_WINDOW = 3
JA_NEGATION_WINDOW = 6
_EN_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9']")
_EN_CLAUSE_BREAKS = frozenset('.,;:!?()[]"…')
_JA_FUNCTION_POS = frozenset({"助詞", "助動詞", "接尾辞"})


class LexiconFile(BaseModel):
    about: str = ""
    terms: dict[str, float]
    negators: list[str]
    boosters: dict[str, float]
    contrast: list[str]
    transparent: list[str] = []


@dataclass(frozen=True)
class Token:
    key: str  # Porter stem (English) or lemma (Japanese)
    text: str  # the word as written (lowercased in English)
    clause: int
    pos: str = ""


@dataclass(frozen=True)
class Lexicon:
    language: Language
    terms: dict[tuple[str, ...], float]
    negators: frozenset[str]
    boosters: dict[str, float]
    contrast: frozenset[str]
    transparent: frozenset[str]
    longest: int


@dataclass(frozen=True)
class Sentiment:
    label: SentimentLabel
    compound: float
    language: Language
    matches: tuple[tuple[str, float], ...]  # (term as written, contribution)


@functools.cache
def _stemmer() -> PorterStemmer:
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


def _stem(word: str) -> str:
    return str(_stemmer().stem(word))


def _english_tokens(text: str) -> list[Token]:
    tokens: list[Token] = []
    clause = 0
    for word in _EN_TOKEN.findall(text.lower().replace("’", "'")):
        if word in _EN_CLAUSE_BREAKS:
            clause += 1
            continue
        if not word[0].isalnum():
            continue
        tokens.append(Token(key=_stem(word), text=word, clause=clause))
    return tokens


def _japanese_tokens(text: str) -> list[Token]:
    tokens: list[Token] = []
    clause = 0
    for m in morphemes(text):
        if m.pos == "補助記号" or is_punctuation_or_symbol(m.surface):
            clause += 1
            continue
        tokens.append(Token(key=m.lemma, text=m.surface, clause=clause, pos=m.pos))
    return tokens


def tokenize(text: str, language: Language) -> list[Token]:
    return _japanese_tokens(text) if language == "ja" else _english_tokens(text)


def _keys(entry: str, language: Language) -> tuple[str, ...]:
    return tuple(t.key for t in tokenize(entry, language))


def _head_key(word: str, language: Language) -> str | None:
    """The normalized key of a one-word entry, or of its head when the rest are particles
    ("非常に" -> 非常); None when the entry starts with a function word ("だが")."""
    tokens = tokenize(word, language)
    if not tokens or tokens[0].pos in _JA_FUNCTION_POS:
        return None
    if any(t.pos not in _JA_FUNCTION_POS for t in tokens[1:]):
        return None
    return tokens[0].key


def _with_keys(words: Sequence[str], language: Language) -> frozenset[str]:
    """Each word as written and as its normalized key ("すごく" and 凄い, "非常に" and 非常)."""
    keys = {_head_key(w, language) for w in words}
    return frozenset(words) | {k for k in keys if k is not None}


@functools.cache
def lexicon(language: Language) -> Lexicon:
    resource = importlib.resources.files("distillery.evals.graders") / "lexicons"
    raw = (resource / f"sentiment_{language}.json").read_text(encoding="utf-8")
    data = LexiconFile.model_validate_json(raw)
    terms = {_keys(term, language): value for term, value in data.terms.items()}
    terms.pop((), None)
    return Lexicon(
        language=language,
        terms=terms,
        negators=_with_keys(data.negators, language),
        boosters={k: v for w, v in data.boosters.items() for k in _with_keys([w], language)},
        contrast=_with_keys(data.contrast, language),
        transparent=_with_keys(data.transparent, language),
        longest=max(len(k) for k in terms),
    )


def _in(token: Token, words: frozenset[str] | dict[str, float]) -> bool:
    return token.key in words or token.text in words


def _match(tokens: list[Token], i: int, lex: Lexicon) -> tuple[int, float]:
    """Length and valence of the longest lexicon term starting at ``i`` (0 when none)."""
    for length in range(min(lex.longest, len(tokens) - i), 0, -1):
        span = tokens[i : i + length]
        if span[-1].clause != span[0].clause:
            continue
        valence = lex.terms.get(tuple(t.key for t in span))
        if valence is not None:
            return length, valence
    return 0, 0.0


def _boost(tokens: list[Token], i: int, lex: Lexicon) -> float:
    for j in (i - 1, i - 2):
        if j >= 0 and tokens[j].clause == tokens[i].clause:
            for word in (tokens[j].key, tokens[j].text):
                if word in lex.boosters:
                    return lex.boosters[word]
    return 1.0


def _english_negated(tokens: list[Token], i: int) -> bool:
    lex = lexicon("en")
    before = tokens[max(0, i - EN_NEGATION_WINDOW) : i]
    return any(
        t.clause == tokens[i].clause and (_in(t, lex.negators) or t.text.endswith("n't"))
        for t in before
    )


def _japanese_negated(tokens: list[Token], end: int, clause: int) -> bool:
    lex = lexicon("ja")
    for t in tokens[end : end + JA_NEGATION_WINDOW]:
        if t.clause != clause:
            return False
        if _in(t, lex.negators):
            return True
        if not (t.pos in _JA_FUNCTION_POS or _in(t, lex.transparent)):
            return False
    return False


def _contributions(tokens: list[Token], lex: Lexicon) -> list[tuple[int, str, float]]:
    found: list[tuple[int, str, float]] = []
    sep = "" if lex.language == "ja" else " "
    i = 0
    while i < len(tokens):
        length, valence = _match(tokens, i, lex)
        if not length:
            i += 1
            continue
        value = valence * _boost(tokens, i, lex)
        negated = (
            _japanese_negated(tokens, i + length, tokens[i].clause)
            if lex.language == "ja"
            else _english_negated(tokens, i)
        )
        if negated:
            value *= NEGATION_SCALE
        found.append((i, sep.join(t.text for t in tokens[i : i + length]), value))
        i += length
    return found


def _contrast_weighted(
    tokens: list[Token], found: list[tuple[int, str, float]], lex: Lexicon
) -> list[tuple[str, float]]:
    pivots = [i for i, t in enumerate(tokens) if _in(t, lex.contrast)]
    if not pivots:
        return [(text, value) for _, text, value in found]
    pivot = pivots[-1]
    return [(text, value * (0.5 if i < pivot else 1.5)) for i, text, value in found]


def label_of(compound: float) -> SentimentLabel:
    if compound >= THRESHOLD:
        return "positive"
    if compound <= -THRESHOLD:
        return "negative"
    return "neutral"


def analyze(text: str) -> Sentiment:
    """Lexicon sentiment of ``text`` (English or Japanese)."""
    language: Language = "ja" if is_japanese(text) else "en"
    lex = lexicon(language)
    tokens = tokenize(text, language)
    matches = _contrast_weighted(tokens, _contributions(tokens, lex), lex)
    total = math.fsum(value for _, value in matches)
    compound = total / math.sqrt(total * total + 15.0)
    return Sentiment(
        label=label_of(compound),
        compound=compound,
        language=language,
        matches=tuple((text, round(value, 4)) for text, value in matches),
    )
