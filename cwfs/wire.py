"""S3 requests on trio sockets: the two that cwfs sends by the thousand.

HeadObject (stat-ahead sends one per listed file with ``--exact-metadata``) and
ListObjectsV2 (one per 1,000 names listed). Through botocore a HeadObject cost the mount
about 2.5 ms of CPU (building and signing the request, a worker thread, the GIL handed
back and forth between 32 of them), and a ListObjectsV2 page about 55 ms, most of it in
botocore's response parsing. Here each is one signed HTTP/1.1 request on a kept-alive
connection, sent and read by the trio thread: under 0.1 ms for a HeadObject; a listing
page's body is parsed by `cwfs.store` with ElementTree.

Rules:

- A connection carries one request at a time. Idle connections are kept and reused, at
  most ``limit`` open at once. A reused connection that fails before the first byte of
  its answer is retried at once on a new one, without counting an attempt: the server
  may have closed it while it was idle (every HTTP client does the same).
- Connecting (TLS included) is bounded by ``connect_timeout``; an answer fails once
  ``read_timeout`` passes with no byte of it arriving (a slow but live answer is not
  cut), as botocore's read timeout does. Each call is one attempt: `cwfs.store` retries
  it by the rules of `cwfs.retry`, as it does botocore's requests.
- `cwfs.store` uses botocore instead when botocore would send a request differently:
  through a proxy.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import trio

from cwfs.errors import (
    StoreAccessDenied,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    store_error,
)
from cwfs.sigv4 import Credentials, Signer, canonical_path

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 << 10
MAX_BODY_BYTES = 64 << 20  # a listing page is a few hundred KiB
READ_SIZE = 256 << 10
CREDENTIALS_TTL = 60.0  # seconds a copy of refreshable credentials is used


@dataclass(frozen=True)
class Answer:
    """An answer's status, headers (names in lower case) and body."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Endpoint:
    """Where one bucket's requests go: the host to connect to and each key's path."""

    scheme: str
    host: str
    port: int
    base_path: str
    bucket: str
    virtual: bool

    @classmethod
    def parse(cls, url: str, bucket: str, virtual: bool) -> Endpoint:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
        return cls(parts.scheme, host, port, parts.path.rstrip("/"), bucket, virtual)

    @property
    def connect_host(self) -> str:
        return f"{self.bucket}.{self.host}" if self.virtual else self.host

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.connect_host + ("" if self.port == default else f":{self.port}")

    def path(self, key: str) -> str:
        """The encoded path of ``key`` ("" for the bucket itself)."""
        bucket = "" if self.virtual else "/" + self.bucket
        return canonical_path(f"{self.base_path}{bucket}/{key}")


def canonical_query(params: Mapping[str, str]) -> str:
    """A query string as SigV4 signs it: sorted, every byte but unreserved ones encoded."""
    return "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
        for name, value in sorted(params.items())
    )


class _ConnectionLost(Exception):
    """The connection failed; ``answered`` says whether any byte of an answer came."""

    def __init__(self, message: str, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


class _Connection:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""
        self._alive: Callable[[], None] = lambda: None

    async def exchange(
        self, request: bytes, has_body: bool, alive: Callable[[], None]
    ) -> tuple[Answer, bool]:
        """Send ``request``, read the answer; and whether to keep the connection.
        ``alive()`` is called whenever bytes of the answer arrive."""
        self._alive = alive
        try:
            await self.stream.send_all(request)
            end = await self._fill_until(b"\r\n\r\n", MAX_HEADER_BYTES)
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            answer, keep = _parse(head.decode("latin-1"))
            if not has_body or answer.status in (204, 304):
                return answer, keep
            body, keep = await self._body(answer.headers, keep)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _ConnectionLost(str(exc) or type(exc).__name__, bool(self.buffer)) from None
        return Answer(answer.status, answer.reason, answer.headers, body), keep

    async def _fill_until(self, marker: bytes, limit: int) -> int:
        """Read until the buffer holds ``marker``; its offset."""
        while (end := self.buffer.find(marker)) < 0:
            if len(self.buffer) > limit:
                raise _ConnectionLost("answer too long", answered=True)
            await self._receive()
        return end

    async def _fill_to(self, size: int) -> None:
        while len(self.buffer) < size:
            await self._receive()

    async def _receive(self) -> None:
        data = await self.stream.receive_some(READ_SIZE)
        if not data:
            raise _ConnectionLost("connection closed by the server", bool(self.buffer))
        self.buffer += data
        self._alive()

    async def _body(self, headers: dict[str, str], keep: bool) -> tuple[bytes, bool]:
        """The answer's body, by its length, its chunks, or up to the connection's end."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._chunked(), keep
        if (length := headers.get("content-length")) is not None:
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                raise _ConnectionLost(f"unusable Content-Length {length!r}", answered=True)
            await self._fill_to(int(length))
            body, self.buffer = self.buffer[: int(length)], self.buffer[int(length) :]
            return body, keep
        try:  # neither: the body ends with the connection
            while len(self.buffer) <= MAX_BODY_BYTES:
                await self._receive()
        except _ConnectionLost:
            body, self.buffer = self.buffer, b""
            return body, False
        raise _ConnectionLost("answer too long", answered=True)

    async def _chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            end = await self._fill_until(b"\r\n", MAX_HEADER_BYTES)
            size_text = self.buffer[:end].split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _ConnectionLost("bad chunk size", answered=True) from None
            total += size
            if total > MAX_BODY_BYTES:
                raise _ConnectionLost("answer too long", answered=True)
            await self._fill_to(end + 2 + size + 2)
            chunks.append(self.buffer[end + 2 : end + 2 + size])
            self.buffer = self.buffer[end + 2 + size + 2 :]
            if size == 0:  # no trailers are asked for
                return b"".join(chunks)


def _parse(head: str) -> tuple[Answer, bool]:
    status_line, *lines = head.split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise _ConnectionLost(f"not an HTTP answer: {status_line[:80]!r}", answered=True)
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
    return Answer(int(code), reason, headers), keep


class WireClient:
    """HeadObject and GETs of one bucket, on a pool of kept-alive connections."""

    def __init__(
        self,
        endpoint: Endpoint,
        signer: Signer,
        credentials: Callable[[], Credentials | None],
        *,
        limit: int,
        connect_timeout: float,
        read_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._signer = signer
        self._load_credentials = credentials
        self._credentials: tuple[float, Credentials] | None = None
        self._limiter = trio.CapacityLimiter(limit)
        self._idle: list[_Connection] = []
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._tls = tls

    @staticmethod
    def deadline(seconds: float) -> float:
        """When a network wait that starts now gives up (tests on a mock clock, which
        jumps past any deadline while a socket waits, make it never)."""
        return trio.current_time() + seconds

    async def head(self, key: str) -> Answer | None:
        """HeadObject: the object's headers, or None when the key does not exist (404)."""
        answer = await self.request("HEAD", "HeadObject", key)
        return None if answer.status == 404 else answer

    async def get(self, op: str, key: str, query: Mapping[str, str]) -> Answer:
        """A GET of ``key`` ("" for the bucket) with ``query``: the whole answer."""
        return await self.request("GET", op, key, query)

    async def request(
        self, method: str, op: str, key: str, query: Mapping[str, str] | None = None
    ) -> Answer:
        """One attempt of a request (`cwfs.retry` sends it again): a 2xx or 404 answer is
        returned, every other outcome raised as its typed error."""
        try:
            answer = await self._send(method, op, key, query or {})
        except trio.TooSlowError:
            raise StoreTimeout("no answer in time", op=op, key=key, code="Timeout") from None
        except (_ConnectionLost, OSError) as exc:
            raise StoreUnavailable(str(exc), op=op, key=key, code=type(exc).__name__) from None
        if answer.status < 300 or answer.status == 404:
            return answer
        raise answer_error(op, key, answer)

    async def _send(self, method: str, op: str, key: str, query: Mapping[str, str]) -> Answer:
        request = await self._request(method, op, key, query)
        has_body = method != "HEAD"
        async with self._limiter:
            while self._idle:  # reused: a failure before any answer is the server's idle close
                connection = self._idle.pop()
                try:
                    return await self._exchange(connection, request, has_body)
                except _ConnectionLost as lost:
                    if lost.answered:
                        raise
            return await self._exchange(await self._connect(), request, has_body)

    async def _exchange(self, connection: _Connection, request: bytes, has_body: bool) -> Answer:
        keep = False
        try:
            with trio.CancelScope(deadline=self.deadline(self._read_timeout)) as scope:

                def alive() -> None:  # bytes came: a slow but live answer is not cut
                    scope.deadline = self.deadline(self._read_timeout)

                answer, keep = await connection.exchange(request, has_body, alive)
            if scope.cancelled_caught:
                raise trio.TooSlowError
        finally:
            if keep and not connection.buffer:
                self._idle.append(connection)
            else:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(connection.stream)
        return answer

    async def _connect(self) -> _Connection:
        endpoint = self._endpoint
        with trio.fail_at(self.deadline(self._connect_timeout)):
            tcp = await trio.open_tcp_stream(endpoint.connect_host, endpoint.port)
            if endpoint.scheme != "https":
                return _Connection(tcp)
            tls = trio.SSLStream(
                tcp,
                self._tls or ssl.create_default_context(),
                server_hostname=endpoint.connect_host,
                https_compatible=True,
            )
            try:
                await tls.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(tcp)
                raise
            return _Connection(tls)

    async def _request(self, method: str, op: str, key: str, query: Mapping[str, str]) -> bytes:
        endpoint = self._endpoint
        path, host = endpoint.path(key), endpoint.host_header
        query_text = canonical_query(query)
        credentials = await self._credentials_now(op, key)
        headers = self._signer.headers(method, host, path, credentials, query=query_text)
        target = f"{path}?{query_text}" if query_text else path
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "User-Agent: cwfs"]
        lines += [f"{name}: {value}" for name, value in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _credentials_now(self, op: str, key: str) -> Credentials:
        """The credentials to sign with, loaded again (in a thread: a refresh may make
        requests of its own) once they are `CREDENTIALS_TTL` old."""
        now = trio.current_time()
        if self._credentials is None or now - self._credentials[0] > CREDENTIALS_TTL:
            loaded = await trio.to_thread.run_sync(self._load_credentials)
            if loaded is None:
                raise StoreAccessDenied(
                    "no credentials found", op=op, key=key, code="NoCredentials"
                )
            self._credentials = (now, loaded)
        return self._credentials[1]

    async def aclose(self) -> None:
        """Close the idle connections."""
        while self._idle:
            await trio.aclose_forcefully(self._idle.pop().stream)


def answer_error(op: str, key: str, answer: Answer) -> StoreError:
    """The typed error of an answer: by the code in its XML body, or its status when it
    has none (a HEAD's answer never has one), as botocore reports it."""
    code, message = str(answer.status), answer.reason
    request_id = answer.headers.get("x-amz-request-id", "")
    if answer.body:
        code = _xml_text(answer.body, b"Code") or code
        message = _xml_text(answer.body, b"Message") or message
        request_id = _xml_text(answer.body, b"RequestId") or request_id
    return store_error(op, key, code, message, request_id, answer.status)


def _xml_text(body: bytes, tag: bytes) -> str:
    """The text of the first ``<tag>`` in an S3 error body ("" if none)."""
    start = body.find(b"<" + tag + b">")
    end = body.find(b"</" + tag + b">", start)
    if start < 0 or end < 0:
        return ""
    return body[start + len(tag) + 2 : end].decode("utf-8", "replace")
