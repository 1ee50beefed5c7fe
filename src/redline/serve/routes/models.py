"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models this server serves now, from
what it holds in process (its loaded local models and its upstreams' models).

Neither route awaits the cache or the database: with Redis frozen or the database slow, they
answer as fast as ``/health``. The database's model registry (``redline_models``) is still
written as models load, for people's queries; ``created`` of a card is when this server
first answered for that model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from redline.serve.auth import authorize
from redline.serve.errors import APIError
from redline.serve.model import Model
from redline.serve.routes._common import json_response, server_state
from redline.serve.schemas import ModelCard, ModelList
from redline.serve.state import ServerState

__all__ = ["ModelCards", "router", "served_ids", "served_models"]

router = APIRouter(tags=["models"])


def served_models(state: ServerState) -> dict[str, tuple[Model, str]]:
    """The models this server answers for now, by id, each with its owner: its local models
    (once loaded) and its upstreams' models. Aliases are not listed."""
    served: dict[str, tuple[Model, str]] = {}
    for name, engine in state.engines.items():
        served[name] = (engine.model, "redline")
    if state.model is not None:
        served.setdefault(state.model.name, (state.model, "redline"))
    if state.gateway is not None:
        for name, model in state.gateway.models.items():
            owners = ",".join(upstream.name for upstream in model.route.upstreams)
            served.setdefault(name, (model, f"upstream:{owners}"))
    return served


def served_ids(state: ServerState) -> set[str]:
    """The ids of :func:`served_models`."""
    return set(served_models(state))


class ModelCards:
    """The cards of one server's models, built from the models themselves; remembers when
    it first showed each (a card's ``created``). *clock*: Unix time."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._created: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"ModelCards(shown={len(self._created)})"

    def all(self, state: ServerState) -> list[dict[str, Any]]:
        """Every served model's card, by id."""
        served = served_models(state)
        return [self._card(name, *served[name]) for name in sorted(served)]

    def get(self, state: ServerState, model_id: str) -> dict[str, Any] | None:
        """The card of *model_id* if it is served here (by its id, not an alias), else None."""
        found = served_models(state).get(model_id)
        return None if found is None else self._card(model_id, *found)

    def _card(self, name: str, model: Model, owned_by: str) -> dict[str, Any]:
        created = self._created.setdefault(name, int(self._clock()))
        return {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": owned_by,
            "version": str(model.version),
            "dimension": int(model.dimension),
            "max_input_tokens": getattr(model, "max_input_tokens", None),
        }


def _cards(request: Request) -> ModelCards:
    cards: ModelCards | None = getattr(request.app.state, "model_cards", None)
    if cards is None:
        cards = request.app.state.model_cards = ModelCards()
    return cards


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request, client: str = Depends(authorize)) -> Response:
    """Every model served here: the local ones and the upstreams'."""
    state = server_state(request)
    return json_response({"object": "list", "data": _cards(request).all(state)})


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def retrieve_model(
    model_id: str, request: Request, client: str = Depends(authorize)
) -> Response:
    """One served model; 404 JSON when unknown."""
    card = _cards(request).get(server_state(request), model_id)
    if card is None:
        raise APIError(
            404, f"model {model_id!r} not found", param="model_id", code="model_not_found"
        )
    return json_response(card)
