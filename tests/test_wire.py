"""The lean HeadObject client: its signatures are botocore's, its connections are reused
and its failures bounded. Through a mount, tests/test_legacy.py and tests/test_browse.py
count the HeadObjects it sends."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from unittest import mock

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
import trio

from cwfs.credentials import uses_proxy
from cwfs.errors import ObjectMissing, StoreAccessDenied, StoreTimeout
from cwfs.retry import Retrier
from cwfs.sigv4 import Credentials, Signer, canonical_path
from cwfs.store import _head_info
from cwfs.wire import Answer, Endpoint, WireClient, _parse, answer_error, canonical_query

NOW = dt.datetime(2026, 12, 3, 10, 46, 41, tzinfo=dt.timezone.utc)
KEYS = ["d/f", "a b+c", "ünï/cödé", "x~y_z-.txt", "100%/q?x=1#y", "a//b/./c"]


def botocore_headers(
    host: str, path: str, creds: Credentials, method: str = "HEAD", query: str = ""
) -> dict[str, str]:
    url = f"http://{host}{path}" + (f"?{query}" if query else "")
    request = botocore.awsrequest.AWSRequest(method=method, url=url)
    request.headers["x-amz-content-sha256"] = botocore.auth.EMPTY_SHA256_HASH
    signer = botocore.auth.S3SigV4Auth(
        botocore.credentials.Credentials(creds.access_key, creds.secret_key, creds.token),
        "s3",
        "us-east-1",
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        signer.add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("token", [None, "session/token+="])
def test_signature_is_botocores(key, token):
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    path = canonical_path("/bucket/" + key)
    ours = dict(Signer("us-east-1").headers("HEAD", "127.0.0.1:9000", path, creds, NOW))
    theirs = botocore_headers("127.0.0.1:9000", path, creds)
    assert ours["authorization"] == theirs["authorization"]
    assert ours["x-amz-date"] == theirs["x-amz-date"]
    assert ours.get("x-amz-security-token") == theirs.get("x-amz-security-token")


def test_a_listings_query_is_signed_as_botocore_signs_it():
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    params = {
        "list-type": "2",
        "prefix": "a b+c/ü%/",
        "delimiter": "/",
        "continuation-token": "1/abc+def==",
        "start-after": "a b+c/ü%/x~y",
        "max-keys": "1000",
        "encoding-type": "url",
    }
    query = canonical_query(params)
    assert query.split("&")[0] == "continuation-token=1%2Fabc%2Bdef%3D%3D"
    ours = dict(Signer("us-east-1").headers("GET", "h:1", "/b", creds, NOW, query=query))
    assert (
        ours["authorization"] == botocore_headers("h:1", "/b", creds, "GET", query)["authorization"]
    )


def test_the_signing_key_follows_the_date_and_the_secret():
    signer = Signer("us-east-1")
    one = Credentials("A", "secret-one")
    first = signer.headers("HEAD", "h", "/b/k", one, NOW)
    next_day = signer.headers("HEAD", "h", "/b/k", one, NOW + dt.timedelta(days=1))
    rotated = signer.headers("HEAD", "h", "/b/k", Credentials("A", "secret-two"), NOW)
    assert len({first[-1], next_day[-1], rotated[-1]}) == 3
    assert signer.headers("HEAD", "h", "/b/k", one, NOW) == first


def test_endpoint_paths_and_hosts():
    path_style = Endpoint.parse("http://127.0.0.1:9000", "bkt", virtual=False)
    assert (path_style.connect_host, path_style.host_header) == ("127.0.0.1", "127.0.0.1:9000")
    assert path_style.path("a b/ü") == "/bkt/a%20b/%C3%BC"
    virtual = Endpoint.parse("https://cwobject.com", "bkt", virtual=True)
    assert (virtual.connect_host, virtual.host_header, virtual.port) == (
        "bkt.cwobject.com",
        "bkt.cwobject.com",
        443,
    )
    assert virtual.path("k") == "/k"


@pytest.mark.parametrize(
    "head, keep",
    [
        ('HTTP/1.1 200 OK\r\nETag: "e"', True),
        ("HTTP/1.1 200 OK\r\nConnection: close", False),
        ("HTTP/1.0 200 OK\r\nETag: x", False),
        ("HTTP/1.0 200 OK\r\nConnection: Keep-Alive", True),
    ],
)
def test_answers_say_whether_the_connection_stays(head, keep):
    answer, kept = _parse(head)
    assert (answer.status, kept) == (200, keep)


# --------------------------------------------------------------- against a local server
Handler = Callable[[trio.SocketStream, bytes], Awaitable[bool]]
"""Answers one request on a connection; False closes the connection."""


async def answer_ok(stream: trio.SocketStream, request: bytes) -> bool:
    await stream.send_all(
        b'HTTP/1.1 200 OK\r\nContent-Length: 7\r\nETag: "abc"\r\n'
        b"Last-Modified: Thu, 03 Dec 2026 10:00:00 GMT\r\nx-amz-meta-mode: 33188\r\n\r\n"
    )
    return True


class Server:
    """A trio HTTP server on loopback that counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                request, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests.append(request)
                if not await self.handler(stream, request):
                    return


class Retried:
    """A `WireClient` whose requests are retried as `cwfs.store` retries them."""

    def __init__(self, client: WireClient, retrier: Retrier) -> None:
        self.client, self.retrier = client, retrier

    async def head(self, key: str) -> Answer | None:
        return await self.retrier.run("HeadObject", key, lambda: self.client.head(key))

    async def get(self, op: str, key: str, query: dict[str, str]) -> Answer:
        return await self.retrier.run(op, key, lambda: self.client.get(op, key, query))


def run_against(
    handler: Handler,
    test: Callable[[Retried, Server], Awaitable[None]],
    max_attempts: int = 3,
    timeout_attempts: int = 3,
    **kw: float,
):
    async def main() -> None:
        server = Server(handler)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            options = {"connect_timeout": 2.0, "read_timeout": 2.0, **kw}
            client = WireClient(
                Endpoint.parse(f"http://127.0.0.1:{port}", "bkt", virtual=False),
                Signer("us-east-1"),
                lambda: Credentials("A", "S"),
                limit=4,
                **options,
            )
            await test(Retried(client, Retrier(max_attempts, timeout_attempts)), server)
            await client.aclose()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_one_connection_serves_many_heads():
    async def test(client: Retried, server: Server) -> None:
        for _ in range(20):
            answer = await client.head("d/f")
            assert answer is not None and answer.headers["x-amz-meta-mode"] == "33188"
        assert (server.connections, len(server.requests)) == (1, 20)
        assert server.requests[0].startswith(b"HEAD /bkt/d/f HTTP/1.1\r\n")

    run_against(answer_ok, test)


def test_a_connection_closed_while_idle_costs_no_attempt():
    async def answer_then_close(stream: trio.SocketStream, request: bytes) -> bool:
        await answer_ok(stream, request)
        return False  # closed without saying so (no Connection: close)

    async def test(client: Retried, server: Server) -> None:
        for _ in range(5):
            assert await client.head("k") is not None
        assert (server.connections, len(server.requests)) == (5, 5)

    run_against(answer_then_close, test, max_attempts=1)


def test_missing_is_none_denied_is_typed_and_5xx_is_retried():
    answers = iter([b"503 Slow Down", b"500 Internal", b"200 OK", b"404 Not Found", b"403 Denied"])

    async def scripted(stream: trio.SocketStream, request: bytes) -> bool:
        status = next(answers)
        await stream.send_all(b"HTTP/1.1 " + status + b"\r\nx-amz-request-id: R1\r\n\r\n")
        return True

    async def test(client: Retried, server: Server) -> None:
        with mock.patch("cwfs.retry.MAX_BACKOFF", 0.01):
            assert await client.head("k") is not None  # third attempt
            assert await client.head("k") is None
            with pytest.raises(StoreAccessDenied) as denied:
                await client.head("k")
        assert (denied.value.code, denied.value.request_id) == ("403", "R1")
        assert len(server.requests) == 5

    run_against(scripted, test)


def test_a_stalled_server_fails_within_the_read_timeout_per_attempt():
    async def stall(stream: trio.SocketStream, request: bytes) -> bool:
        await trio.sleep_forever()
        return False

    async def test(client: Retried, server: Server) -> None:
        with mock.patch("cwfs.retry.MAX_BACKOFF", 0.01), trio.fail_after(5):
            with pytest.raises(StoreTimeout):
                await client.head("k")
        assert len(server.requests) == 2

    run_against(stall, test, read_timeout=0.3, timeout_attempts=2)


def test_without_credentials_it_is_access_denied():
    async def main() -> None:
        client = WireClient(
            Endpoint.parse("http://127.0.0.1:9", "bkt", virtual=False),
            Signer("us-east-1"),
            lambda: None,
            limit=1,
            connect_timeout=1,
            read_timeout=1,
        )
        with pytest.raises(StoreAccessDenied):
            await client.head("k")

    trio.run(main)


@pytest.mark.parametrize(
    "env, endpoint, expected",
    [
        ({}, "https://cwobject.com", False),
        ({"https_proxy": "http://proxy:3128"}, "https://cwobject.com", True),
        ({"https_proxy": "http://proxy:3128"}, "http://127.0.0.1:9000", False),
        ({"http_proxy": "http://p:1", "no_proxy": "cwlota.com"}, "http://cwlota.com", False),
    ],
)
def test_a_proxy_leaves_head_object_to_botocore(monkeypatch, env, endpoint, expected):
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert uses_proxy(endpoint) is expected


def test_head_answers_become_object_info():
    info = _head_info(
        "k",
        {
            "content-length": "7",
            "etag": "abc",
            "last-modified": "Thu, 03 Dec 2026 10:00:00 GMT",
            "x-amz-meta-mode": "33188",
            "x-amz-request-id": "R",
        },
    )
    assert (info.size, info.etag, info.metadata) == (7, '"abc"', {"mode": "33188"})
    assert info.mtime == dt.datetime(2026, 12, 3, 10, tzinfo=dt.timezone.utc).timestamp()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ],
)
def test_bodies_by_length_or_by_chunks_keep_the_connection(answer):
    async def reply(stream: trio.SocketStream, request: bytes) -> bool:
        for i in range(0, len(answer), 7):  # in pieces, as a network delivers them
            await stream.send_all(answer[i : i + 7])
        return True

    async def test(client: Retried, server: Server) -> None:
        for _ in range(3):
            got = await client.get("ListObjectsV2", "", {"list-type": "2", "prefix": "a b"})
            assert (got.status, got.body) == (200, b"hello world")
        assert server.connections == 1
        assert server.requests[0].startswith(b"GET /bkt/?list-type=2&prefix=a%20b HTTP/1.1")

    run_against(reply, test)


def test_a_body_to_the_end_of_the_connection():
    async def reply(stream: trio.SocketStream, request: bytes) -> bool:
        await stream.send_all(b"HTTP/1.0 200 OK\r\n\r\nall of it")
        return False

    async def test(client: Retried, server: Server) -> None:
        assert (await client.get("ListObjectsV2", "", {})).body == b"all of it"
        assert (await client.get("ListObjectsV2", "", {})).body == b"all of it"
        assert server.connections == 2

    run_against(reply, test)


def test_an_error_body_gives_the_code_and_a_cut_body_is_retried():
    error = (
        b"<?xml version='1.0'?><Error><Code>NoSuchBucket</Code><Message>gone</Message>"
        b"<RequestId>R9</RequestId></Error>"
    )
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ncut short",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(error) + error,
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n" % len(error) + error,
        ]
    )

    async def reply(stream: trio.SocketStream, request: bytes) -> bool:
        answer = next(answers)
        await stream.send_all(answer)
        return not answer.endswith(b"cut short")

    async def test(client: Retried, server: Server) -> None:
        with mock.patch("cwfs.retry.MAX_BACKOFF", 0.01):
            missing = await client.get("ListObjectsV2", "", {})  # the cut one was retried
        assert missing.status == 404 and len(server.requests) == 2
        with pytest.raises(ObjectMissing) as info:
            raise answer_error("ListObjectsV2", "p/", missing)
        assert (info.value.code, info.value.message, info.value.request_id) == (
            "NoSuchBucket",
            "gone",
            "R9",
        )
        with pytest.raises(ObjectMissing):  # the body's code decides, not the status
            await client.get("ListObjectsV2", "", {})

    run_against(reply, test)


def test_a_slow_but_live_answer_is_not_cut_by_the_read_timeout():
    """The read timeout counts from the last byte that came, not from the request."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nslow but ok"

    async def trickle(stream: trio.SocketStream, request: bytes) -> bool:
        for i in range(0, len(answer), 4):  # 0.75 s in all, 0.05 s between pieces
            await stream.send_all(answer[i : i + 4])
            await trio.sleep(0.05)
        return True

    async def test(client: Retried, server: Server) -> None:
        got = await client.get("ListObjectsV2", "", {})
        assert (got.body, len(server.requests)) == (b"slow but ok", 1)

    run_against(trickle, test, read_timeout=0.3, max_attempts=1)
