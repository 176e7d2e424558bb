"""The one set of rules for a message's content as text (distillery.wire.content)."""

from __future__ import annotations

import pytest

from distillery.wire.base import list_object
from distillery.wire.content import content_text, first_non_text, message_text, part_text

PARTS = [
    {"type": "text", "text": "東京の天気は"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    {"type": "input_text", "text": "晴れ"},
    {"type": "output_text", "text": " today."},
    {"type": "refusal", "refusal": "I can't."},
]


def test_text_parts_of_both_apis_and_refusals_are_joined_other_parts_skipped() -> None:
    assert content_text(PARTS) == "東京の天気は晴れ today.I can't."
    assert message_text({"role": "user", "content": PARTS}) == "東京の天気は晴れ today.I can't."


def test_a_page_marks_the_parts_without_text() -> None:
    shown = content_text(PARTS, mark_other=True, sep="\n")
    assert shown.split("\n") == ["東京の天気は", "[image_url]", "晴れ", " today.", "I can't."]


@pytest.mark.parametrize(
    ("content", "text"),
    [(None, ""), ("plain", "plain"), ([], ""), ([{"type": "text"}], ""), (42, "42")],
)
def test_strings_none_and_odd_values(content: object, text: str) -> None:
    assert content_text(content) == text


def test_a_tool_only_assistant_turn_has_no_text() -> None:
    assert message_text({"role": "assistant", "content": None, "tool_calls": []}) == ""


def test_first_non_text_names_the_part_a_local_model_cannot_read() -> None:
    assert first_non_text(PARTS) == (1, "image_url")
    assert first_non_text([{"type": "text", "text": "a"}, "raw"]) == (1, "str")
    assert first_non_text([{"type": "text", "text": "a"}]) is None
    assert first_non_text("a string") is None
    assert part_text({"type": "text", "text": 3}) is None  # a text part whose text is no string


def test_the_list_envelope() -> None:
    assert list_object([], False) == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    page = list_object([{"id": "a"}, {"id": "b"}], True)
    assert (page["first_id"], page["last_id"], page["has_more"]) == ("a", "b", True)
