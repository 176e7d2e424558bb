"""``/v1/distillery/costs``: spend per prompt and model, candidates, savings and payback."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from distillery.api.deps import ADMIN, ServicesDep
from distillery.wire.params import INT64_MAX

router = APIRouter(prefix="/v1/distillery/costs", tags=["costs"])


@router.get("", dependencies=[ADMIN])
async def get_costs(
    services: ServicesDep,
    group_key: str = Query(default="prompt", max_length=64),
    since: int | None = Query(default=None, ge=0, le=INT64_MAX),
    until: int | None = Query(default=None, ge=0, le=INT64_MAX),
    min_examples: int = Query(default=100, ge=1),
) -> dict[str, Any]:
    services.routes.before_read()  # this process's route outcomes, written first
    return services.costs.report(
        group_key=group_key,
        since=since,
        until=until,
        min_examples=min_examples,
    )
