"""The WSGI middleware in front of moto: one instance per named endpoint.

Per request: parse target and operation, count it, answer control calls, verify the
signature, apply fault rules (refusing the request, or carrying it out and then losing
the response), then either handle it ourselves (RenameObject, GetObject) or hand it to
moto with S3's checksum handling around it (integrity.py), serialising mutations under
the shared lock and tracking in-flight writes for CoreWeave's 409
ConditionalRequestConflict.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from .auth import verify_request
from .conditional import check_destination, is_conditional
from .controlapi import PREFIX, handle_control
from .faults import CutBody, InjectedFault, ResetBody, SlowBody
from .integrity import body_checksum, prepare
from .motocall import WSGIApp, call_moto
from .ops import EnvironHeaders, Target, operation_name, parse_query, parse_target
from .ranges import DEFER_TO_MOTO, get_object
from .rename import rename_object
from .responses import S3Error, StartResponse, drain_body, read_body
from .state import ServerState
from .stats import CountedBody

log = logging.getLogger(__name__)

#: Writes that replace the object at the request's key (guarded by conditions / in-flight).
WRITE_OPS = frozenset({"PutObject", "CopyObject", "CompleteMultipartUpload", "RenameObject"})
#: Operations moto can run concurrently with mutations; everything else takes the lock.
UNLOCKED_OPS = frozenset(
    {
        "GetObject",
        "HeadObject",
        "HeadBucket",
        "UploadPart",
        "GetBucketLocation",
        "GetBucketVersioning",
        "ListBuckets",
    }
)


class CwfsApp:
    """WSGI app for one endpoint (``primary`` or ``lota``) over the shared state."""

    def __init__(self, moto_app: WSGIApp, state: ServerState, endpoint: str) -> None:
        self.moto_app, self.state, self.endpoint = moto_app, state, endpoint

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = parse_target(environ, self.state.vhost_suffixes)
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if (
            target.bucket in (None, "_cwfs")
            and target.raw_path.startswith(PREFIX)
            and not target.virtual
        ):
            return handle_control(self.state, environ, target.raw_path, target.raw_query).send(
                start_response
            )
        query = parse_query(target.raw_query)
        op = operation_name(method, target, query, environ)
        entry = self.state.stats.begin(self.endpoint, op, method, target, environ)

        def recording_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            self.state.stats.finish(entry, int(status.split()[0]))
            return start_response(status, headers, exc_info)

        try:
            return CountedBody(
                self._dispatch(environ, recording_start_response, target, op, query), entry
            )
        except S3Error as err:
            drain_body(environ)
            fault = err.logged_as if isinstance(err, InjectedFault) else False
            self.state.stats.finish(entry, err.status, err.code, fault=fault)
            log.debug(
                "%s %s %s/%s -> %s %s",
                self.endpoint,
                op,
                target.bucket,
                target.key,
                err.status,
                err.code,
            )
            return err.response(method).send(start_response)

    def _dispatch(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        target: Target,
        op: str,
        query: dict[str, list[str]],
    ) -> Iterable[bytes]:
        """Authenticate, apply fault rules, run the operation."""
        verify_request(environ, target, self.state.access_key, self.state.secret_key)
        fault = self.state.faults.check(op, self.endpoint, target.bucket, target.key)
        if fault is None:
            return self._route(environ, start_response, target, op, query)
        if fault.phase == "slow":
            return SlowBody(self._route(environ, start_response, target, op, query), fault.delay)
        if fault.phase == "reset":
            return ResetBody(environ["werkzeug.socket"])
        if fault.phase == "cut":
            body = self._route(environ, start_response, target, op, query)
            return CutBody(body, fault.cut_at, environ["werkzeug.socket"])
        time.sleep(fault.delay)  # a stalled server (requests run in threads of their own)
        if fault.phase == "before":
            raise fault
        self._run_and_lose_response(environ, target, op, query)
        raise fault

    def _run_and_lose_response(
        self, environ: dict[str, Any], target: Target, op: str, query: dict[str, list[str]]
    ) -> None:
        """Carry the request out in full, then throw its answer away (an "after" fault)."""
        try:
            answer = self._route(environ, lambda *args: None, target, op, query)
            close = getattr(answer, "close", None)
            if close is not None:
                close()
            log.debug(
                "%s %s %s/%s done; response dropped by fault",
                self.endpoint,
                op,
                target.bucket,
                target.key,
            )
        except S3Error as err:
            log.debug("%s %s failed (%s) before its response was dropped", op, target.key, err)

    def _route(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        target: Target,
        op: str,
        query: dict[str, list[str]],
    ) -> Iterable[bytes]:
        """Run the operation ourselves or through moto, under the locks it needs."""
        state = self.state
        headers = EnvironHeaders(environ)
        if op in WRITE_OPS and target.bucket and target.key is not None:
            with state.inflight.writing(target.bucket, target.key, is_conditional(headers)):
                body = read_body(environ)
                if op == "PutObject":
                    body_checksum(environ, body)
                with state.lock:
                    if op == "RenameObject":
                        return rename_object(
                            state.backend, target.bucket, target.key, headers, state.tokens
                        ).send(start_response)
                    check_destination(state.backend, target.bucket, target.key, headers)
                    return self._moto(environ, start_response, target, op, query)
        if op == "GetObject" and not any(p in query for p in DEFER_TO_MOTO):
            return get_object(state.backend, target.bucket or "", target.key or "", headers).send(
                start_response
            )
        if op == "UploadPart":
            body_checksum(environ, read_body(environ))
            with state.part_locks.hold(
                (target.bucket, query.get("uploadId", [""])[0], query.get("partNumber", [""])[0])
            ):
                return self._moto(environ, start_response, target, op, query)
        if op in UNLOCKED_OPS:
            return self._moto(environ, start_response, target, op, query)
        read_body(environ)
        with state.lock:
            return self._moto(environ, start_response, target, op, query)

    def _moto(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        target: Target,
        op: str,
        query: dict[str, list[str]],
    ) -> Iterable[bytes]:
        """Run moto with our checksum checks around it, while we still hold any lock."""
        finish = prepare(op, self.state.backend, target, query, environ)
        reply = call_moto(self.moto_app, environ)
        if finish is not None and reply.ok:
            finish(reply)
        return reply.response().send(start_response)
