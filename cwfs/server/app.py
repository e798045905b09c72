"""The WSGI middleware in front of moto: one instance per named endpoint.

Per request: parse target and operation, count it, answer control calls, verify the
signature, apply fault rules, then either handle it ourselves (RenameObject, GetObject)
or hand it to moto, serialising mutations under the shared lock and tracking in-flight
writes for CoreWeave's 409 ConditionalRequestConflict.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from .auth import verify_request
from .conditional import check_destination, is_conditional
from .controlapi import PREFIX, handle_control
from .responses import S3Error, StartResponse, drain_body, read_body
from .ops import EnvironHeaders, Target, operation_name, parse_query, parse_target
from .ranges import DEFER_TO_MOTO, get_object
from .rename import rename_object
from .state import ServerState

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: Writes that replace the object at the request's key (guarded by conditions / in-flight).
WRITE_OPS = frozenset({"PutObject", "CopyObject", "CompleteMultipartUpload", "RenameObject"})
#: Operations moto can run concurrently with mutations; everything else takes the lock.
UNLOCKED_OPS = frozenset({"GetObject", "HeadObject", "HeadBucket", "UploadPart",
                          "GetBucketLocation", "GetBucketVersioning", "ListBuckets"})


class _Fault(S3Error):
    """An injected error (logged as such)."""


class CwfsApp:
    """WSGI app for one endpoint (``primary`` or ``lota``) over the shared state."""

    def __init__(self, moto_app: WSGIApp, state: ServerState, endpoint: str) -> None:
        self.moto_app, self.state, self.endpoint = moto_app, state, endpoint

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = parse_target(environ, self.state.vhost_suffixes)
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if target.bucket in (None, "_cwfs") and target.raw_path.startswith(PREFIX) \
                and not target.virtual:
            return handle_control(self.state, environ, target.raw_path, target.raw_query) \
                .send(start_response)
        query = parse_query(target.raw_query)
        op = operation_name(method, target, query, environ)
        entry = self.state.stats.begin(self.endpoint, op, method, target, environ)

        def recording_start_response(status: str, headers: list[tuple[str, str]],
                                     exc_info: Any = None) -> Any:
            self.state.stats.finish(entry, int(status.split()[0]))
            return start_response(status, headers, exc_info)

        try:
            return self._dispatch(environ, recording_start_response, target, method, op, query)
        except S3Error as err:
            drain_body(environ)
            self.state.stats.finish(entry, err.status, err.code, fault=isinstance(err, _Fault))
            log.debug("%s %s %s/%s -> %s %s", self.endpoint, op, target.bucket, target.key,
                      err.status, err.code)
            return err.response(method).send(start_response)

    def _dispatch(self, environ: dict[str, Any], start_response: StartResponse, target: Target,
                  method: str, op: str, query: dict[str, list[str]]) -> Iterable[bytes]:
        state = self.state
        headers = EnvironHeaders(environ)
        verify_request(environ, target, state.access_key, state.secret_key)
        fault = state.faults.check(op, self.endpoint, target.bucket, target.key)
        if fault is not None:
            raise _Fault(fault.status, fault.code, fault.message)
        if op in WRITE_OPS and target.bucket and target.key is not None:
            with state.inflight.writing(target.bucket, target.key, is_conditional(headers)):
                read_body(environ)
                with state.lock:
                    if op == "RenameObject":
                        return rename_object(state.backend, target.bucket, target.key, headers,
                                             state.tokens).send(start_response)
                    check_destination(state.backend, target.bucket, target.key, headers)
                    return self._moto(environ, start_response)
        if op == "GetObject" and not any(p in query for p in DEFER_TO_MOTO):
            return get_object(state.backend, target.bucket or "", target.key or "", headers) \
                .send(start_response)
        if op in UNLOCKED_OPS:
            return self._moto(environ, start_response)
        read_body(environ)
        with state.lock:
            return self._moto(environ, start_response)

    def _moto(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Run moto and materialise its (already built) body while we still hold any lock."""
        result = self.moto_app(environ, start_response)
        try:
            return [b"".join(result)]
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
