"""Route modules mirror the URL tree (``chat_completions.py`` serves ``/v1/chat/completions``),
but for the gateway's create endpoints, together in ``capture.py``.

Add a router to ``ROUTERS`` to mount it.
"""

from fastapi import APIRouter

from distillery.api.routes import (
    annotations,
    capture,
    chat_completions,
    costs,
    datasets,
    distillations,
    embeddings,
    eval_comparisons,
    evals,
    files,
    fine_tuning,
    graders,
    judge_calibrations,
    lineage,
    model_exports,
    models,
    relabels,
    responses_api,
    routes,
)

ROUTERS: list[APIRouter] = [
    capture.router,  # the gateway: create on every endpoint that captures
    chat_completions.router,
    models.router,
    files.router,
    fine_tuning.router,
    graders.router,
    datasets.router,
    annotations.router,
    costs.router,
    evals.router,
    eval_comparisons.router,
    embeddings.router,
    routes.router,
    distillations.router,
    lineage.router,
    judge_calibrations.router,
    model_exports.router,
    responses_api.router,
    relabels.router,
]
