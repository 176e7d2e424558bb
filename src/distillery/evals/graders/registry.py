"""Build a grader from its config dict (one ``testing_criteria`` entry of an eval).

OpenAI's types (``string_check``, ``text_similarity``, ``label_model``, ``score_model``) take
exactly OpenAI's fields; distillery's own types use the same style. An invalid config or an
unknown ``type`` raises ``InvalidRequestError`` whose ``param`` points at the offending field, e.g.
``testing_criteria[2].evaluation_metric``. OpenAI's ``python`` and ``multi`` graders are refused:
distillery runs no user code.

Model judges call ``judge``; without one they can be built (to validate an eval) but grading
raises ``GraderError``. Embedding graders use ``embedder``, by default the local MiniLM model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeGuard, TypeVar, assert_never, get_args

from pydantic import ValidationError

from distillery.embedders import Embedder, default_embedder
from distillery.errors import InvalidRequestError
from distillery.evals.graders.base import Grader, GraderConfig, JudgeClient
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
from distillery.evals.graders.semantic import SemanticSimilarityConfig, SemanticSimilarityGrader
from distillery.evals.graders.sentiment import SentimentConfig, SentimentGrader
from distillery.evals.graders.string_check import StringCheckConfig, StringCheckGrader
from distillery.evals.graders.text_similarity import TextSimilarityConfig, TextSimilarityGrader
from distillery.wire.params import invalid_request

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
GraderType = Literal[LocalGraderType, JudgedGraderType]
GRADER_TYPES: tuple[str, ...] = get_args(LocalGraderType) + get_args(JudgedGraderType)
UNSUPPORTED_TYPES = ("python", "multi")

C = TypeVar("C", bound=GraderConfig)


def parse_config(cls: type[C], config: Mapping[str, Any], param: str) -> C:
    """Validate ``config`` into ``cls``; the first problem becomes an ``InvalidRequestError``."""
    try:
        return cls.model_validate(dict(config))
    except ValidationError as exc:
        raise invalid_request(exc, prefix=param, what="grader config") from exc


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
    if grader_type in UNSUPPORTED_TYPES:
        message = f"Grader type {grader_type!r} is not supported: distillery runs no user code."
    else:
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
