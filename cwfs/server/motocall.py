"""Run moto for one request and hold its answer before it goes out.

moto builds its whole response in memory anyway; capturing it lets the middleware
finish what moto leaves undone (store a verified checksum on the object it just wrote,
add fields to its XML result, correct checksum headers) while any lock is still held,
and lets a "lost response" fault throw the answer away after the effect happened.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from .responses import Response, StartResponse

WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass
class MotoReply:
    """moto's status, headers and body, editable until :meth:`send`."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for n, v in self.headers if n.lower() == lower), None)

    def drop_headers(self, prefix: str) -> None:
        """Remove every header whose (lower-case) name starts with ``prefix``."""
        self.headers = [(n, v) for n, v in self.headers if not n.lower().startswith(prefix)]

    def set_header(self, name: str, value: str) -> None:
        self.drop_headers(name.lower())
        self.headers.append((name, value))

    def set_xml_fields(self, root: str, fields: dict[str, str], drop_prefix: str) -> None:
        """Replace the elements named ``drop_prefix*`` of the XML result ``root`` by ``fields``."""
        text = self.body.decode()
        text = re.sub(rf"<({re.escape(drop_prefix)}\w*)>[^<]*</\1>", "", text)
        added = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
        self.body = text.replace(f"</{root}>", f"{added}</{root}>", 1).encode()
        if self.header("Content-Length") is not None:
            self.set_header("Content-Length", str(len(self.body)))

    def response(self) -> Response:
        return Response(self.status, self.headers, [self.body])


def call_moto(app: WSGIApp, environ: dict[str, Any]) -> MotoReply:
    """Run moto's WSGI app to completion and capture what it answered."""
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        captured["status"], captured["headers"] = int(status.split()[0]), list(headers)

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return MotoReply(captured["status"], captured["headers"], body)
