"""Structure checks that need no ground truth (distillery's ``valid_json``, ``valid_xml``,
``json_schema``; the Azure/OpenAI dashboard presets "Valid JSON or XML" and "Matches schema").

- ``valid_json``: strict RFC 8259 JSON (``NaN``/``Infinity`` refused), the same parse that fills
  ``sample.output_json``.
- ``valid_xml``: one well-formed document parsed with defusedxml, which refuses entity
  declarations (billion laughs, quadratic blowup) and external entities/DTDs (XXE): such input
  fails with the reason instead of being expanded.
- ``json_schema``: JSON Schema validation with ``jsonschema`` (the dialect named by ``$schema``,
  else 2020-12; ``format`` checked). A failing grade names the most relevant error's JSON path and
  reason in ``reason``, and lists every error (path, message, keyword) in ``details["errors"]``.
  A schema that is itself invalid is refused when the grader is built.

Score 1.0 when the check passes, else 0.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from distillery.evals.graders.base import Grade, GradeInput, GraderConfig, parse_json, preview
from distillery.evals.graders.templating import render

MAX_LISTED_ERRORS = 20


class ValidJsonConfig(GraderConfig):
    type: Literal["valid_json"] = "valid_json"
    name: str = "valid_json"
    input: str = "{{sample.output_text}}"


class ValidXmlConfig(GraderConfig):
    type: Literal["valid_xml"] = "valid_xml"
    name: str = "valid_xml"
    input: str = "{{sample.output_text}}"


class JsonSchemaConfig(GraderConfig):
    type: Literal["json_schema"] = "json_schema"
    name: str = "json_schema"
    input: str = "{{sample.output_text}}"
    json_schema: dict[str, Any] = Field(alias="schema")

    @field_validator("json_schema")
    @classmethod
    def _schema_is_valid(cls, schema: dict[str, Any]) -> dict[str, Any]:
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"invalid JSON Schema at {exc.json_path}: {exc.message}") from exc
        return schema


def _pass() -> Grade:
    return Grade(score=1.0, passed=True)


def _fail(reason: str, details: Mapping[str, object] | None = None) -> Grade:
    return Grade(score=0.0, passed=False, reason=reason, details=details or {})


def json_error(text: str) -> str | None:
    """Why ``text`` is not valid JSON, or None when it is."""
    try:
        parse_json(text)
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    return None


class ValidJsonGrader:
    type: ClassVar[str] = "valid_json"

    def __init__(self, config: ValidJsonConfig) -> None:
        self.config = config
        self.name = config.name

    async def grade(self, inp: GradeInput) -> Grade:
        error = json_error(render(self.config.input, inp))
        return _pass() if error is None else _fail(error)


def xml_error(text: str) -> str | None:
    """Why ``text`` is not one safe, well-formed XML document, or None when it is."""
    from xml.etree.ElementTree import ParseError

    import defusedxml.ElementTree
    from defusedxml import DefusedXmlException

    try:
        defusedxml.ElementTree.fromstring(text)
    except DefusedXmlException as exc:
        return f"unsafe XML refused ({type(exc).__name__}): {exc}"
    except ParseError as exc:
        return f"not well-formed XML: {exc}"
    return None


class ValidXmlGrader:
    type: ClassVar[str] = "valid_xml"

    def __init__(self, config: ValidXmlConfig) -> None:
        self.config = config
        self.name = config.name

    async def grade(self, inp: GradeInput) -> Grade:
        error = xml_error(render(self.config.input, inp))
        return _pass() if error is None else _fail(error)


class JsonSchemaGrader:
    type: ClassVar[str] = "json_schema"

    def __init__(self, config: JsonSchemaConfig) -> None:
        from jsonschema.validators import validator_for

        self.config = config
        self.name = config.name
        cls = validator_for(config.json_schema)
        self._validator = cls(config.json_schema, format_checker=cls.FORMAT_CHECKER)

    async def grade(self, inp: GradeInput) -> Grade:
        from jsonschema.exceptions import best_match

        text = render(self.config.input, inp)
        try:
            instance = parse_json(text)
        except ValueError as exc:
            return _fail(f"not valid JSON: {exc}", {"path": None})
        errors = list(self._validator.iter_errors(instance))
        if not errors:
            return _pass()
        best = best_match(errors)
        listed = [
            {"path": e.json_path, "message": preview(e.message), "keyword": e.validator}
            for e in errors[:MAX_LISTED_ERRORS]
        ]
        return _fail(
            f"{best.json_path}: {preview(best.message)}",
            {"path": best.json_path, "keyword": best.validator, "errors": listed},
        )
