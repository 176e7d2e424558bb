"""valid_json, valid_xml (defusedxml), json_schema with failing path and reason."""

from __future__ import annotations

import pytest

from distillery.errors import InvalidRequestError
from distillery.evals.graders.registry import build_grader

from .support import run_grade

ROUTING_SCHEMA = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "minLength": 1},
        "category": {"enum": ["労務", "人事", "総務", "経理", "情報システム"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["reason", "category"],
    "additionalProperties": False,
}

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<lolz>&lol3;</lolz>"""
XXE = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'


def test_valid_json() -> None:
    grader = build_grader({"type": "valid_json"})
    assert run_grade(grader, '{"reason": "VPN", "category": "情報システム"}').passed is True
    bad = run_grade(grader, '{"reason": "VPN", "category": }')
    assert bad.passed is False and bad.score == 0.0
    assert bad.reason is not None and "not valid JSON" in bad.reason and "line 1" in bad.reason
    assert run_grade(grader, "NaN").passed is False


def test_valid_xml_accepts_documents_and_rejects_malformed() -> None:
    grader = build_grader({"type": "valid_xml", "name": "xml"})
    assert run_grade(grader, "<answer><category>経理</category></answer>").passed is True
    bad = run_grade(grader, "<answer><category>経理</answer>")
    assert bad.passed is False
    assert bad.reason is not None and "not well-formed" in bad.reason
    assert run_grade(grader, "<a/><b/>").passed is False


@pytest.mark.parametrize("attack", [BILLION_LAUGHS, XXE])
def test_valid_xml_refuses_entity_attacks(attack: str) -> None:
    grade = run_grade(build_grader({"type": "valid_xml"}), attack)
    assert grade.passed is False
    assert grade.reason is not None and "EntitiesForbidden" in grade.reason


def test_json_schema_passes_valid_instance() -> None:
    grader = build_grader({"type": "json_schema", "schema": ROUTING_SCHEMA})
    grade = run_grade(grader, '{"reason": "有給の申請", "category": "労務"}')
    assert grade.passed is True and grade.score == 1.0


def test_json_schema_reports_failing_path_and_reason() -> None:
    grader = build_grader({"type": "json_schema", "name": "routing", "schema": ROUTING_SCHEMA})
    grade = run_grade(grader, '{"reason": "VPN", "category": "IT", "tags": ["vpn", 3]}')
    assert grade.passed is False
    assert grade.reason is not None
    assert grade.details["path"] in ("$.category", "$.tags[1]")
    paths = {e["path"] for e in grade.details["errors"]}  # type: ignore[attr-defined]
    assert paths == {"$.category", "$.tags[1]"}
    assert grade.reason.startswith(str(grade.details["path"]) + ": ")


def test_json_schema_missing_field_and_non_json() -> None:
    grader = build_grader({"type": "json_schema", "schema": ROUTING_SCHEMA})
    missing = run_grade(grader, '{"reason": "VPN"}')
    assert missing.passed is False
    assert missing.reason == "$: 'category' is a required property"
    assert missing.details["keyword"] == "required"
    not_json = run_grade(grader, "category: 労務")
    assert not_json.passed is False
    assert not_json.reason is not None and not_json.reason.startswith("not valid JSON")


def test_invalid_schema_is_refused_with_param() -> None:
    with pytest.raises(InvalidRequestError) as err:
        build_grader(
            {"type": "json_schema", "schema": {"type": "objekt"}}, param="testing_criteria[3]"
        )
    assert err.value.param == "testing_criteria[3].schema"
    assert "invalid JSON Schema" in err.value.message
