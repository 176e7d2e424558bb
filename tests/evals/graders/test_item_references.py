"""item_references: the item fields a grader config reads, so a job can check its rows first."""

from __future__ import annotations

from distillery.evals.graders.templating import item_references


def test_string_fields() -> None:
    config = {
        "type": "string_check",
        "name": "item.name is not a template",
        "input": "{{ sample.output_json.answer }}",
        "reference": "{{item.answer.text}} or {{ item.alias }} ({{sample.output_text}})",
        "operation": "eq",
    }
    assert item_references(config) == {"answer", "alias"}


def test_messages_and_content_parts() -> None:
    config = {
        "type": "score_model",
        "name": "s",
        "model": "m",
        "input": [
            {"role": "system", "content": "Grade against {{item.reference}}."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Q: {{item.messages.0.content}}"},
                    {"type": "input_image", "image_url": "{{item.image_url}}"},
                ],
            },
        ],
    }
    assert item_references(config) == {"reference", "messages", "image_url"}


def test_multi_in_both_shapes_and_python_adds_nothing() -> None:
    exact = {"type": "string_check", "name": "name", "input": "{{sample.output_text}}",
             "reference": "{{item.name}}", "operation": "eq"}  # fmt: skip
    python = {"type": "python", "name": "p",
              "source": "def grade(sample, item):\n    return '{{item.secret}}' == item['x']\n"}  # fmt: skip
    mapping = {
        "type": "multi",
        "name": "m",
        # sub-graders keyed by names that are also config keys elsewhere
        "graders": {"name": exact, "schema": {**exact, "reference": "{{item.email}}"}, "p": python},
        "calculate_output": "name + schema + p",
    }
    assert item_references(mapping) == {"name", "email"}
    single = {"type": "multi", "name": "m", "graders": exact, "calculate_output": "name"}
    assert item_references(single) == {"name"}
    assert item_references(python) == set()


def test_nothing_to_find() -> None:
    assert item_references({"type": "valid_json"}) == set()
    assert item_references({"type": "string_check", "input": "{{item}}", "reference": "x"}) == set()
    assert item_references({"type": "string_check", "input": "{{ other.field }}"}) == set()
    assert item_references("not a config") == set()
    schema = {"type": "json_schema", "schema": {"description": "{{item.not_rendered}}"}}
    assert item_references(schema) == set()
