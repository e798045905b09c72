"""The unsigned JSON control API under ``/_cwfs/`` (counts, request log, faults, seeding)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from .ops import parse_query
from .responses import Response, json_response, read_body
from .seed import seed_objects
from .state import ServerState

PREFIX = "/_cwfs/"


def _body_json(environ: dict[str, Any]) -> Any:
    body = read_body(environ)
    return json.loads(body) if body.strip() else {}


def handle_control(
    state: ServerState, environ: dict[str, Any], path: str, raw_query: str
) -> Response:
    """Route one control request; errors come back as JSON ``{"error": ...}``."""
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    name = path[len(PREFIX) :].strip("/")
    query = parse_query(raw_query)

    def counts() -> Any:
        return state.stats.counts()

    def requests() -> Any:
        return state.stats.requests(since=int(query.get("since", ["0"])[0]))

    def reset() -> Any:
        state.stats.reset()
        return {"ok": True}

    def add_fault() -> Any:
        return state.faults.add(_body_json(environ)).__dict__

    def clear_faults() -> Any:
        state.faults.clear()
        return {"ok": True}

    def seed() -> Any:
        spec = _body_json(environ)
        with state.lock:
            created = seed_objects(
                state.backend,
                spec["bucket"],
                spec.get("objects", []),
                create_bucket=bool(spec.get("create_bucket", True)),
            )
        return {"bucket": spec["bucket"], "objects": created}

    def health() -> Any:
        return {"ok": True, "pid": os.getpid(), "endpoints": state.endpoints}

    routes: dict[tuple[str, str], Callable[[], Any]] = {
        ("GET", "counts"): counts,
        ("GET", "requests"): requests,
        ("POST", "reset"): reset,
        ("GET", "faults"): state.faults.rules,
        ("POST", "faults"): add_fault,
        ("DELETE", "faults"): clear_faults,
        ("POST", "seed"): seed,
        ("GET", "health"): health,
    }
    handler = routes.get((method, name))
    if handler is None:
        return json_response({"error": f"no control endpoint {method} {path}"}, 404)
    try:
        return json_response(handler())
    except (ValueError, KeyError, TypeError) as exc:
        return json_response({"error": f"{type(exc).__name__}: {exc}"}, 400)
