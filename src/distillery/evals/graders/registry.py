"""Build a grader from its config dict (one ``testing_criteria`` entry of an eval, an RFT job's
``method.reinforcement.grader``, a route's grader).

OpenAI's types (``string_check``, ``text_similarity``, ``label_model``, ``score_model``,
``python``, ``multi``) take exactly OpenAI's fields; distillery's own types use the same style. An
invalid config or an unknown ``type`` raises ``InvalidRequestError`` whose ``param`` points at the
offending field, e.g. ``testing_criteria[2].evaluation_metric``.

- ``multi`` (``multi.py``) combines sub-graders of any other type with a ``calculate_output``
  formula; its formula is checked here, at build time.
- ``python`` (``python_grader.py``) runs the user's ``grade(sample, item)`` in a sandbox (network,
  PID and IPC namespaces, resource limits, an audit hook). Its source is compiled (never run)
  here; on a machine where the sandbox does not work the config is refused with a 400 that says
  why (``python_grader.sandbox_available``).

Model judges call ``judge``; without one they can be built (to validate an eval) but grading
raises ``GraderError``. Embedding graders use ``embedder``, by default the local MiniLM model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeGuard, assert_never, get_args

from distillery.embedders import Embedder, default_embedder
from distillery.errors import InvalidRequestError
from distillery.evals.graders.base import Grader, JudgeClient, parse_config
from distillery.evals.graders.json_checks import (
    JsonSchemaConfig,
    JsonSchemaGrader,
    ValidJsonConfig,
    ValidJsonGrader,
    ValidXmlConfig,
    ValidXmlGrader,
)
from distillery.evals.graders.llm_judge import (
    CriteriaMatchConfig,
    CriteriaMatchGrader,
    CustomPromptConfig,
    CustomPromptGrader,
    FactualityConfig,
    FactualityGrader,
    LabelModelConfig,
    LabelModelGrader,
    ScoreModelConfig,
    ScoreModelGrader,
)
from distillery.evals.graders.multi import build_multi
from distillery.evals.graders.python_grader import build_python
from distillery.evals.graders.semantic import SemanticSimilarityConfig, SemanticSimilarityGrader
from distillery.evals.graders.sentiment import SentimentConfig, SentimentGrader
from distillery.evals.graders.string_check import StringCheckConfig, StringCheckGrader
from distillery.evals.graders.text_similarity import TextSimilarityConfig, TextSimilarityGrader

LocalGraderType = Literal[
    "string_check",
    "text_similarity",
    "semantic_similarity",
    "valid_json",
    "valid_xml",
    "json_schema",
]
JudgedGraderType = Literal[
    "label_model",
    "score_model",
    "sentiment",
    "factuality",
    "criteria_match",
    "custom_prompt",
]
CompositeGraderType = Literal["python", "multi"]  # user code; graders of graders
GraderType = Literal[LocalGraderType, JudgedGraderType, CompositeGraderType]
GRADER_TYPES: tuple[str, ...] = (
    get_args(LocalGraderType) + get_args(JudgedGraderType) + get_args(CompositeGraderType)
)

__all__ = ["GRADER_TYPES", "GraderType", "build_grader", "parse_config"]


def _is_local(value: object) -> TypeGuard[LocalGraderType]:
    return value in get_args(LocalGraderType)


def _is_judged(value: object) -> TypeGuard[JudgedGraderType]:
    return value in get_args(JudgedGraderType)


def build_grader(
    config: Mapping[str, Any],
    *,
    judge: JudgeClient | None = None,
    embedder: Embedder | None = None,
    param: str = "testing_criteria[0]",
) -> Grader:
    """The grader described by ``config`` (its ``type`` picks the implementation)."""
    if not isinstance(config, Mapping):
        raise InvalidRequestError("A grader config must be an object.", param=param)
    grader_type = config.get("type")
    if _is_local(grader_type):
        return _build_local(grader_type, config, embedder, param)
    if _is_judged(grader_type):
        return _build_judged(grader_type, config, judge, param)
    if grader_type == "python":
        return build_python(config, param)
    if grader_type == "multi":

        def build_sub(sub: Mapping[str, Any], where: str) -> Grader:
            return build_grader(sub, judge=judge, embedder=embedder, param=where)

        return build_multi(config, param, build_sub)
    message = f"Unknown grader type {grader_type!r}; expected one of {', '.join(GRADER_TYPES)}."
    raise InvalidRequestError(message, param=f"{param}.type")


def _build_local(
    grader_type: LocalGraderType,
    config: Mapping[str, Any],
    embedder: Embedder | None,
    param: str,
) -> Grader:
    match grader_type:
        case "string_check":
            return StringCheckGrader(parse_config(StringCheckConfig, config, param))
        case "text_similarity":
            cfg = parse_config(TextSimilarityConfig, config, param)
            return TextSimilarityGrader(cfg, embedder=embedder or default_embedder())
        case "semantic_similarity":
            sem = parse_config(SemanticSimilarityConfig, config, param)
            return SemanticSimilarityGrader(sem, embedder=embedder or default_embedder())
        case "valid_json":
            return ValidJsonGrader(parse_config(ValidJsonConfig, config, param))
        case "valid_xml":
            return ValidXmlGrader(parse_config(ValidXmlConfig, config, param))
        case "json_schema":
            return JsonSchemaGrader(parse_config(JsonSchemaConfig, config, param))
        case _:
            assert_never(grader_type)


def _build_judged(
    grader_type: JudgedGraderType,
    config: Mapping[str, Any],
    judge: JudgeClient | None,
    param: str,
) -> Grader:
    match grader_type:
        case "label_model":
            return LabelModelGrader(parse_config(LabelModelConfig, config, param), judge=judge)
        case "score_model":
            return ScoreModelGrader(parse_config(ScoreModelConfig, config, param), judge=judge)
        case "sentiment":
            return SentimentGrader(parse_config(SentimentConfig, config, param), judge=judge)
        case "factuality":
            return FactualityGrader(parse_config(FactualityConfig, config, param), judge=judge)
        case "criteria_match":
            return CriteriaMatchGrader(
                parse_config(CriteriaMatchConfig, config, param), judge=judge
            )
        case "custom_prompt":
            return CustomPromptGrader(parse_config(CustomPromptConfig, config, param), judge=judge)
        case _:
            assert_never(grader_type)
