"""{{item.x}} / {{sample.output_text}} templates and sample construction."""

from __future__ import annotations

from distillery.evals.graders.base import GradeInput, sample_from_output
from distillery.evals.graders.templating import fill_slots, render

ITEM = {
    "question": "VPNに接続できません",
    "expected": {"category": "情報システム", "tags": ["vpn", "network"]},
    "count": 3,
    "flag": None,
    "messages": [{"role": "user", "content": "hi"}],
}


def _inp(output: str) -> GradeInput:
    return GradeInput(item=ITEM, sample=sample_from_output(output))


def test_item_and_sample_paths() -> None:
    inp = _inp('{"category": "労務", "reason": "有給"}')
    assert render("Q: {{item.question}}", inp) == "Q: VPNに接続できません"
    assert render("{{ item.expected.category }}", inp) == "情報システム"
    assert render("{{item.messages.0.content}}", inp) == "hi"
    assert render("{{sample.output_json.category}}", inp) == "労務"
    assert render("{{sample.output_text}}", inp) == '{"category": "労務", "reason": "有給"}'


def test_missing_keys_render_empty_and_values_as_json() -> None:
    inp = _inp("not json")
    assert render("[{{item.nope}}][{{item.expected.nope.deeper}}][{{item.flag}}]", inp) == "[][][]"
    assert render("{{sample.output_json.category}}", inp) == ""
    assert render("{{item.count}}", inp) == "3"
    assert render("{{item.expected.tags}}", inp) == '["vpn", "network"]'
    assert (
        render("{{item.expected}}", inp)
        == '{"category": "情報システム", "tags": ["vpn", "network"]}'
    )
    assert render("{{item.messages.9.content}}", inp) == ""


def test_other_namespaces_and_single_braces_are_left_alone() -> None:
    inp = _inp("x")
    assert render("{{other.x}} {item.question} {{ sample.output_text }}", inp) == (
        "{{other.x}} {item.question} x"
    )


def test_rendered_values_are_not_rescanned() -> None:
    inp = GradeInput(item={"a": "{{item.b}}", "b": "secret"}, sample=sample_from_output(""))
    assert render("{{item.a}}", inp) == "{{item.b}}"
    assert fill_slots("{x} and {y}", {"x": "{y}", "y": "Y"}) == "{y} and Y"
    assert fill_slots("{unknown}", {}) == "{unknown}"


def test_sample_from_output_parses_strict_json_only() -> None:
    assert sample_from_output('{"a": 1}') == {"output_text": '{"a": 1}', "output_json": {"a": 1}}
    assert sample_from_output("[1, 2]")["output_json"] == [1, 2]
    assert sample_from_output("NaN")["output_json"] is None
    assert sample_from_output('```json\n{"a": 1}\n```')["output_json"] is None
    assert sample_from_output("")["output_json"] is None
