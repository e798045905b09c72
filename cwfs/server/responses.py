"""Minimal WSGI response plumbing shared by our own handlers (not moto's).

A handler returns a :class:`Response`; S3 errors are raised as :class:`S3Error` and
rendered as the XML body real S3 sends, so boto3 parses code and message as usual.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any
from xml.sax.saxutils import escape

StartResponse = Callable[..., Any]


@dataclass
class Response:
    """Status, headers and an iterable body (closed by the WSGI server if it has close())."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Iterable[bytes] = ()

    def send(self, start_response: StartResponse) -> Iterable[bytes]:
        phrase = (
            HTTPStatus(self.status).phrase if self.status in HTTPStatus._value2member_map_ else ""
        )
        start_response(f"{self.status} {phrase}", self.headers)
        return self.body


class S3Error(Exception):
    """An S3 error response: HTTP status, S3 error code, message, optional extra XML fields."""

    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def response(self, method: str = "GET", headers: Mapping[str, str] | None = None) -> Response:
        """The XML error response (no body for HEAD, as in S3)."""
        request_id = uuid.uuid4().hex[:16].upper()
        fields = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in self.extra.items())
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(self.code)}</Code>'
            f"<Message>{escape(self.message)}</Message>{fields}"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        out = [("x-amz-request-id", request_id), *(headers or {}).items()]
        if method == "HEAD":
            return Response(self.status, out + [("Content-Length", "0")], [])
        out += [("Content-Type", "application/xml"), ("Content-Length", str(len(xml)))]
        return Response(self.status, out, [xml])


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON response for the control API."""
    body = json.dumps(payload, default=str).encode()
    return Response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], [body]
    )


def read_body(environ: dict[str, Any]) -> bytes:
    """Read the whole request body and put it back as a fresh stream for the next reader.

    Reading it ourselves, outside any lock, keeps slow uploads from holding the mutation
    lock while moto would otherwise pull the body off the socket.
    """
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = environ.get("CONTENT_LENGTH")
    if length:
        remaining = int(length)
        chunks = []
        while remaining > 0:
            chunk = stream.read(min(remaining, 8 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        body = b"".join(chunks)
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("wsgi.input_terminated", None)
    environ.pop("HTTP_TRANSFER_ENCODING", None)  # else werkzeug ignores CONTENT_LENGTH
    return body


def drain_body(environ: dict[str, Any]) -> None:
    """Consume an unread request body so a keep-alive connection stays in sync."""
    stream = environ.get("wsgi.input")
    length = environ.get("CONTENT_LENGTH")
    if stream is None:
        return
    if length:
        remaining = int(length)
        while remaining > 0:
            chunk = stream.read(min(remaining, 8 << 20))
            if not chunk:
                break
            remaining -= len(chunk)
    elif environ.get("wsgi.input_terminated"):
        while stream.read(8 << 20):
            pass
    environ["CONTENT_LENGTH"] = "0"
    environ.pop("wsgi.input_terminated", None)


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP date header as a naive UTC datetime (moto's convention), None if absent/bad."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def precondition_failed(condition: str) -> S3Error:
    """The 412 S3 answers when a conditional header does not hold."""
    return S3Error(
        412,
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
        Condition=condition,
    )
