"""``GET /v1/models`` and ``GET /v1/models/{id}``: the model registry, read cache-aside."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from redline.exceptions import CacheError
from redline.serve.auth import authorize
from redline.serve.errors import APIError
from redline.serve.routes._common import json_response, server_state
from redline.serve.schemas import ModelCard, ModelList
from redline.serve.state import ServerState

__all__ = ["get_model_info", "router", "served_ids"]

router = APIRouter(tags=["models"])
MODEL_INFO_TTL = 60.0


def _card(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "model", **row}


async def get_model_info(state: ServerState, model_id: str) -> dict[str, Any] | None:
    """Cache-aside read of one registry row: cache, else database (then cached for 60 s)."""
    key = f"model-info:{model_id}"
    cache = state.cache
    if cache is not None:
        try:
            cached = await cache.get(key, None)
        except CacheError:
            cached = None
        if cached is not None:
            return dict(cached)
    if state.database is None:
        return None
    row: dict[str, Any] | None = await state.database.get_model(model_id)
    if row is not None and cache is not None:
        with contextlib.suppress(CacheError):
            await cache.set(key, row, ttl=MODEL_INFO_TTL)
    return row


def served_ids(state: ServerState) -> set[str]:
    """The registry ids this server answers for now: its local models (once loaded) and
    its upstreams' models. Rows other servers or earlier runs registered are not listed."""
    served = set(state.engines)
    if state.model is not None:
        served.add(state.model.name)
    if state.gateway is not None:
        served.update(state.gateway.models)
    return served


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request, client: str = Depends(authorize)) -> Response:
    """Every model served here: the local ones and the upstreams' (from the registry)."""
    state = server_state(request)
    rows = await state.database.list_models() if state.database is not None else []
    served = served_ids(state)
    cards = [_card(row) for row in rows if row["id"] in served]
    return json_response({"object": "list", "data": cards})


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def retrieve_model(
    model_id: str, request: Request, client: str = Depends(authorize)
) -> Response:
    """One registered model; 404 JSON when unknown."""
    state = server_state(request)
    row = await get_model_info(state, model_id) if model_id in served_ids(state) else None
    if row is None:
        raise APIError(
            404, f"model {model_id!r} not found", param="model_id", code="model_not_found"
        )
    return json_response(_card(row))
