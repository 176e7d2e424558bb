"""Coarse script detection: does a text need a word segmenter, and is it Japanese?

Metrics such as BLEU and ROUGE count words. Spaced scripts (Latin, Cyrillic, Greek, Hangul...)
mark words with spaces and the reference libraries tokenize them well; Japanese and Chinese do
not, so their texts go through a morphological analyser first (``distillery.text.tokenize``).

The checks look at Unicode blocks only, which is cheap and deterministic. They decide how to
tokenize, not which language a text is written in: a Chinese sentence also "needs segmentation"
and is segmented with the Japanese dictionary, which splits Han characters into plausible words.
"""

from __future__ import annotations

import re
from typing import Literal

# Hiragana, Katakana (+ phonetic extensions, half-width forms), the prolonged sound mark and the
# iteration marks live in these ranges.
_KANA = "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
# CJK Unified Ideographs, extension A, compatibility ideographs, extensions B..F, and 々〆〇.
_HAN = "\u3005-\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_HANGUL = "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"

_KANA_RE = re.compile(f"[{_KANA}]")
_CJK_RE = re.compile(f"[{_KANA}{_HAN}]")
_HANGUL_RE = re.compile(f"[{_HANGUL}]")

Script = Literal["cjk", "spaced"]


def contains_cjk(text: str) -> bool:
    """Whether ``text`` has any kana or Han character (a script written without spaces)."""
    return _CJK_RE.search(text) is not None


def is_japanese(text: str) -> bool:
    """Kana anywhere, or Han characters in a text without Hangul (Japanese is first-class here)."""
    if _KANA_RE.search(text):
        return True
    return contains_cjk(text) and _HANGUL_RE.search(text) is None


def script_of(text: str) -> Script:
    return "cjk" if contains_cjk(text) else "spaced"


def needs_segmentation(*texts: str) -> bool:
    """Whether texts compared with one another must be segmented into words first.

    One decision per comparison: if either side has CJK text both are tokenized the same way,
    so an output and its reference always produce comparable tokens.
    """
    return any(contains_cjk(t) for t in texts)


Language = Literal["ja", "en", "other"]


def language_of(text: str) -> Language:
    """``ja`` for Japanese (:func:`is_japanese`), ``en`` for text written in Latin letters,
    ``other`` for the rest (Hangul, Cyrillic, Chinese without kana...). The two first-class
    languages are told apart; anything else is only recognised as neither."""
    if is_japanese(text):
        return "ja"
    if contains_cjk(text) or _HANGUL_RE.search(text):
        return "other"
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "en"
    latin = sum(1 for ch in letters if ch.isascii() or "\u00c0" <= ch <= "\u024f")
    return "en" if latin / len(letters) >= 0.8 else "other"
