"""Text normalization applied before segmenting CJK text.

English text is never normalized for metrics: BLEU and ROUGE on spaced text must equal what
sacrebleu and rouge-score compute on the very same strings.
"""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")


def nfkc(text: str) -> str:
    """Unicode NFKC: full-width Latin letters and digits become ASCII, half-width kana full-width.

    "ＶＰＮ" and "VPN", or "ｶﾀｶﾅ" and "カタカナ", then compare equal.
    """
    return unicodedata.normalize("NFKC", text)


def collapse_whitespace(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def is_punctuation_or_symbol(token: str) -> bool:
    """True for tokens made only of punctuation, symbols or spaces ("。", "！", "...", "→")."""
    return all(unicodedata.category(ch)[0] in "PSZ" for ch in token)
