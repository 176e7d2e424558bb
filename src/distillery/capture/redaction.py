"""PII redaction before storage (``[capture.redaction]``).

The ``CompletionWriter`` hands every record to a ``Redactor`` before it is queued, so nothing
unredacted reaches the database, the spool or the dead-letter file. The client has its answer
already: only the stored copy is redacted.

Detection is Microsoft Presidio's: its ``PhoneRecognizer`` (python-phonenumbers, JP and
international formats) and ``CreditCardRecognizer`` (Luhn check), with patterns whose boundaries
work inside Japanese text (Presidio's own ``\\b`` finds no word boundary between ``は`` and an
e-mail address), plus recognisers for the Japanese individual number (My Number, 12 digits with
its check digit) and postal codes. Person names come from GiNZA's NER (``ja_ginza``) when
``names = true``; no English model ships as a trustworthy wheel in the registries here, so English
names are not recognised.

Each distinct value becomes a typed placeholder numbered in order of first appearance
(``<EMAIL_1>``, ``<PHONE_1>``...), the same across the request, the response and the error of one
exchange. Per completion, ``redaction`` records the kinds and counts replaced, never a value.
When an answer's text was redacted its ``logprobs`` are dropped too (their tokens would spell the
values). Metadata is not redacted: it is the application's own labels, used for filtering.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from distillery.errors import ConfigError, DistilleryError
from distillery.settings import RedactionConfig
from distillery.store.records import NewCompletion

log = logging.getLogger("distillery.capture")

# Presidio's entity names -> the placeholder's type
PLACEHOLDER = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "JP_MY_NUMBER": "MY_NUMBER",
    "JP_POSTAL_CODE": "POSTAL_CODE",
    "PERSON": "NAME",
}
_ENTITY = {kind: entity for entity, kind in PLACEHOLDER.items()}

# keys whose values are protocol, never personal data
_SKIP_KEYS = frozenset(
    {"model", "role", "object", "id", "type", "finish_reason", "system_fingerprint"}
    | {"service_tier", "tool_call_id", "reasoning_effort", "code", "param"}
)
_MAYBE_PATTERN = re.compile(r"[\d@]")  # no digit and no @: no pattern recogniser can match

# boundaries that hold inside Japanese text (no spaces around the value)
_EMAIL = (
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,}(?![A-Za-z0-9\-])"
)
_NO_DIGIT_BEFORE = r"(?<![\d\-])(?<!\d[ \-])"
_NO_DIGIT_AFTER = r"(?![ \-]?\d)"
_CARD = _NO_DIGIT_BEFORE + r"\d(?:[ \-]?\d){12,18}" + _NO_DIGIT_AFTER
_MY_NUMBER = _NO_DIGIT_BEFORE + r"\d{4}[ \-]?\d{4}[ \-]?\d{4}" + _NO_DIGIT_AFTER
_POSTAL_MARKED = r"〒\s?\d{3}[\-ー－]?\d{4}" + _NO_DIGIT_AFTER
_POSTAL = _NO_DIGIT_BEFORE + r"\d{3}[\-ー－]\d{4}" + _NO_DIGIT_AFTER


class RedactionError(DistilleryError):
    """A recogniser failed and ``on_error = "refuse"``: the exchange is not stored."""

    status = 500
    type = "server_error"
    default_code = "redaction_failed"


def my_number_valid(digits: str) -> bool:
    """The check digit of a Japanese individual number (12 digits)."""
    if len(digits) != 12 or not digits.isdigit():
        return False
    body = [int(d) for d in digits[:11]]
    # P_n: the n-th digit from the right of the first 11; Q_n = n+1 (n<=6), n-5 (n>=7)
    total = sum(p * (n + 1 if n <= 6 else n - 5) for n, p in enumerate(reversed(body), start=1))
    rest = total % 11
    return int(digits[11]) == (0 if rest <= 1 else 11 - rest)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str  # EMAIL, PHONE, ...
    score: float


def _digits(text: str) -> str:
    return "".join(str(int(c)) for c in text if c.isdigit())


def _normalise(kind: str, value: str) -> str:
    """Two spellings of one value get one placeholder (090-1234-5678 and 09012345678)."""
    if kind == "EMAIL":
        return value.lower()
    if kind == "NAME":
        return value
    return _digits(value)


@dataclass
class _Exchange:
    """The placeholders of one exchange and what was replaced."""

    placeholders: dict[tuple[str, str], str] = field(default_factory=dict)
    numbers: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def placeholder(self, kind: str, value: str) -> str:
        key = (kind, _normalise(kind, value))
        found = self.placeholders.get(key)
        if found is None:
            self.numbers[kind] = self.numbers.get(kind, 0) + 1
            found = self.placeholders[key] = f"<{kind}_{self.numbers[kind]}>"
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return found


def _resolve(spans: list[Span]) -> list[Span]:
    """Non-overlapping spans: the longest first, then the most certain."""
    chosen: list[Span] = []
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), -s.score, s.start)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


class Redactor:
    """Replaces personal data in a ``NewCompletion`` whose exchange the config selects."""

    def __init__(self, config: RedactionConfig) -> None:
        self.config = config
        self._recognisers = _pattern_recognisers(config)
        self._names = _name_recogniser() if config.names else None

    def applies(self, metadata: dict[str, str] | None) -> bool:
        if self.config.all:
            return True
        value = (metadata or {}).get(self.config.metadata_key)
        return value is not None and value in self.config.prompts

    def find(self, text: str) -> list[Span]:
        """The spans to replace in ``text``."""
        spans: list[Span] = []
        if _MAYBE_PATTERN.search(text):
            for entities, recogniser in self._recognisers:
                for r in recogniser.analyze(text, entities, None):
                    kind = PLACEHOLDER.get(r.entity_type)
                    if kind is not None and r.score > 0:
                        spans.append(Span(r.start, r.end, kind, r.score))
        if self._names is not None:
            found = _resolve(spans)
            for start, end in self._names(text):
                if all(end <= s.start or start >= s.end for s in found):
                    spans.append(Span(start, end, "NAME", 0.85))
        return _resolve(spans)

    def redact_text(self, text: str, exchange: _Exchange) -> str:
        spans = self.find(text)
        if not spans:
            return text
        out: list[str] = []
        at = 0
        for span in spans:
            out.append(text[at : span.start])
            out.append(exchange.placeholder(span.kind, text[span.start : span.end]))
            at = span.end
        out.append(text[at:])
        return "".join(out)

    def _walk(self, value: Any, exchange: _Exchange) -> Any:
        if isinstance(value, str):
            return self.redact_text(value, exchange)
        if isinstance(value, list):
            return [self._walk(v, exchange) for v in value]
        if isinstance(value, dict):
            return {
                k: v if k in _SKIP_KEYS and isinstance(v, str) else self._walk(v, exchange)
                for k, v in value.items()
            }
        return value

    def redact(self, record: NewCompletion) -> NewCompletion:
        """The record as it may be stored; raises ``RedactionError`` (``on_error = "refuse"``)."""
        if not self.applies(record.metadata):
            return record
        try:
            exchange = _Exchange()
            request = self._walk(record.request, exchange)
            before = sum(exchange.counts.values())
            response = self._walk(record.response, exchange)
            if response is not None and sum(exchange.counts.values()) > before:
                response = _without_logprobs(response)
            error = self._walk(record.error, exchange)
        except Exception as exc:  # a recogniser failed: never store silently unredacted
            reason = f"{type(exc).__name__}: {str(exc)[:200]}"
            if self.config.on_error == "refuse":
                raise RedactionError(
                    f"PII redaction failed ({reason}); the exchange was not stored "
                    "([capture.redaction] on_error = 'refuse')."
                ) from exc
            log.warning("redaction failed (%s); %s stored unredacted", reason, record.id)
            return replace(record, redaction={"status": "unredacted", "error": reason})
        return replace(
            record,
            request=request,
            response=response,
            error=error,
            redaction={"status": "redacted", "counts": dict(sorted(exchange.counts.items()))},
        )


def _without_logprobs(response: dict[str, Any]) -> dict[str, Any]:
    choices = response.get("choices")
    if not isinstance(choices, list):
        return response
    return {
        **response,
        "choices": [
            {**c, "logprobs": None} if isinstance(c, dict) and c.get("logprobs") else c
            for c in choices
        ],
    }


# --- recognisers ---------------------------------------------------------------------------------

_Recogniser = tuple[list[str], Any]  # (entities, a presidio EntityRecognizer)


def _pattern_recognisers(config: RedactionConfig) -> list[_Recogniser]:
    try:
        import tldextract
        from presidio_analyzer import Pattern, PatternRecognizer
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            PhoneRecognizer,
        )
    except ImportError as exc:
        raise ConfigError(
            f"[capture.redaction] needs Presidio: pip install 'distillery[redaction]' ({exc})"
        ) from exc

    # the public-suffix list bundled with tldextract: nothing is fetched from the network
    offline_suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class EmailRecogniser(PatternRecognizer):  # type: ignore[misc]
        def validate_result(self, pattern_text: str) -> bool:
            return bool(offline_suffixes(pattern_text.rsplit("@", 1)[-1]).suffix)

    class MyNumberRecogniser(PatternRecognizer):  # type: ignore[misc]
        def validate_result(self, pattern_text: str) -> bool:
            return my_number_valid(_digits(pattern_text))

    made: dict[str, Any] = {
        "EMAIL": EmailRecogniser(
            supported_entity="EMAIL_ADDRESS", patterns=[Pattern("email", _EMAIL, 0.5)]
        ),
        "PHONE": PhoneRecognizer(supported_regions=tuple(config.phone_regions)),
        "CARD": CreditCardRecognizer(patterns=[Pattern("card", _CARD, 0.3)]),
        "MY_NUMBER": MyNumberRecogniser(
            supported_entity="JP_MY_NUMBER", patterns=[Pattern("my_number", _MY_NUMBER, 0.5)]
        ),
        "POSTAL_CODE": PatternRecognizer(
            supported_entity="JP_POSTAL_CODE",
            patterns=[
                Pattern("postal_marked", _POSTAL_MARKED, 1.0),
                Pattern("postal", _POSTAL, 0.5),
            ],
        ),
    }
    return [([_ENTITY[kind]], made[kind]) for kind in dict.fromkeys(config.entities)]


def _name_recogniser() -> Callable[[str], list[tuple[int, int]]]:
    """Person names by GiNZA (``ja_ginza``): character spans of its ``Person`` entities."""
    try:
        import spacy

        nlp = spacy.load("ja_ginza", exclude=["compound_splitter", "bunsetu_recognizer"])
    except (ImportError, OSError) as exc:
        raise ConfigError(
            "[capture.redaction] names = true needs GiNZA's model: "
            f"pip install 'distillery[redaction-names]' ({exc})"
        ) from exc

    def names(text: str) -> list[tuple[int, int]]:
        if not text.strip():
            return []
        doc = nlp(text)
        return [(e.start_char, e.end_char) for e in doc.ents if e.label_ == "Person"]

    return names


def build_redactor(config: RedactionConfig) -> Redactor | None:
    """The configured redactor, or None when redaction is off."""
    return Redactor(config) if config.enabled else None
