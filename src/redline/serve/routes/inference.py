"""The inference routes, ``POST /v1/embeddings`` and ``POST /v1/predict``, as one small ASGI app
in front of the FastAPI app (which serves everything else: the model registry, operations, the
status page, ``/docs``).

A request for an inference route goes, in one place: :class:`InferenceRoutes` -> the route's
endpoint (``routes.embeddings`` / ``routes.predict``: authorise, validate the body with the
route's request schema, look up the cache, the micro-batcher, the runtime) -> the JSON
response. Any error on the way is answered by ``errors.error_answer``, the same handlers the
FastAPI routes use, so the JSON error bodies are the same whichever app answered.

The routes' OpenAPI operations are made from the same :class:`InferenceRoute` records
(:meth:`InferenceRoute.operation`, completed by ``serve.openapi`` with the request body the
server accepts, its limits in it, and the errors it can answer).

Example::

    app.add_middleware(InferenceRoutes, routes=(embeddings.ROUTE, predict.ROUTE))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from redline.serve.errors import error_answer

__all__ = ["Endpoint", "InferenceRoute", "InferenceRoutes"]

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class InferenceRoute:
    """``POST path``: *endpoint* answers it (validating the body itself); *response* is what a
    200 answer holds, as the OpenAPI document says."""

    path: str
    endpoint: Endpoint
    response: type[BaseModel]
    tags: tuple[str, ...] = ("inference",)
    #: What the route serves (the metrics' method label reads it, as on a FastAPI route).
    methods: frozenset[str] = field(default=frozenset({"POST"}))

    def operation(self, components: dict[str, Any]) -> dict[str, Any]:
        """The route's OpenAPI operation (success answer only; ``serve.openapi`` adds the
        request body with the server's limits and the errors); *components* gets the
        response's schemas."""
        name = self.endpoint.__name__
        schema = self.response.model_json_schema(
            ref_template="#/components/schemas/{model}", mode="serialization"
        )
        components.update(schema.pop("$defs", {}))
        components[self.response.__name__] = schema
        ref = {"$ref": f"#/components/schemas/{self.response.__name__}"}
        return {
            "tags": list(self.tags),
            "summary": name.replace("_", " ").title(),
            "description": (self.endpoint.__doc__ or "").strip(),
            "operationId": f"{name}{self.path.replace('/', '_')}_post",
            "responses": {
                "200": {
                    "description": "Successful Response",
                    "content": {"application/json": {"schema": ref}},
                }
            },
        }


class InferenceRoutes:
    """ASGI middleware that answers the inference *routes* and passes every other request (and
    the lifespan) to *app*."""

    def __init__(self, app: ASGIApp, routes: Sequence[InferenceRoute]) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = self.routes.get(path)
        if route is None:
            if path.endswith("/") and path[:-1] in self.routes:
                # As Starlette's router answers a path with a slash too many.
                url = URL(scope={**scope, "path": path[:-1]})
                await RedirectResponse(str(url))(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        scope["route"] = route
        request = Request(scope, receive, send)
        try:
            if scope["method"] not in route.methods:
                raise HTTPException(405, headers={"Allow": ", ".join(sorted(route.methods))})
            response = await route.endpoint(request)
        except Exception as exc:
            response = await error_answer(request, exc)
        await response(scope, receive, send)

    def __repr__(self) -> str:
        return f"InferenceRoutes({sorted(self.routes)})"
