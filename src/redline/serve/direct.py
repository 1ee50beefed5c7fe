"""Direct dispatch of the hot routes: ``POST /v1/embeddings`` and ``POST /v1/predict`` are plain
``Request -> Response`` endpoints, so they can be called without FastAPI's per-request
machinery (exception middleware, router scan, exit stack, dependency solving), which costs
more than a cached embedding does. They stay registered with FastAPI too, for routing of
every other method and for the OpenAPI schema at ``/docs``.

Errors raised by a directly dispatched endpoint go to the app's own exception handlers
(``scope["app"]``), the catch-all ``Exception`` one included, so the JSON error bodies are the
same whichever way a request came in. Call it from outside Starlette's error middleware.

Example::

    direct = DirectRoutes.from_routers([embeddings.router], {"/v1/embeddings"})
    handled = await direct.handle(scope, receive, send)   # False: not a hot route
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi.routing import APIRoute, APIRouter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["DirectRoutes"]

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


class DirectRoutes:
    """``(method, path) -> (route, endpoint)`` for routes whose endpoint takes only a Request."""

    def __init__(self, routes: Iterable[APIRoute]) -> None:
        self._routes: dict[tuple[str, str], tuple[APIRoute, Endpoint]] = {}
        for route in routes:
            if route.dependant.dependencies or route.dependant.body_params:
                raise TypeError(f"{route.path} has dependencies; it cannot be called directly")
            for method in route.methods or ():
                self._routes[(method, route.path)] = (route, route.endpoint)

    @classmethod
    def from_routers(cls, routers: Iterable[APIRouter], paths: Iterable[str]) -> DirectRoutes:
        """The routers' API routes at *paths* (include the routers without a prefix)."""
        wanted = set(paths)
        chosen = [
            route
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute) and route.path in wanted
        ]
        missing = wanted - {route.path for route in chosen}
        if missing:
            raise LookupError(f"no API route at {sorted(missing)}")
        return cls(chosen)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._routes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Serve the request if it is for a direct route; ``False`` if it is not."""
        found = self._routes.get((scope["method"], scope["path"]))
        if found is None:
            return False
        route, endpoint = found
        scope["route"] = route
        scope["endpoint"] = endpoint
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = _handler_for(scope["app"], exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)
        return True

    def __repr__(self) -> str:
        paths = sorted(f"{method} {path}" for method, path in self._routes)
        return f"DirectRoutes({paths})"


def _handler_for(app: Starlette, exc: Exception) -> Handler | None:
    """The app's exception handler for *exc*'s class or its nearest base, if any."""
    handlers: dict[Any, Handler] = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None
