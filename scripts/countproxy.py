"""A counting HTTP/1.1 proxy in front of one S3 server, for servers that count nothing.

    proxy = ProxyProcess("127.0.0.1:8080")  # clients use proxy.url instead
    proxy.reset(); ...; proxy.counts()  # {"ListObjectsV2": 100, "GetObject": 3, ...}

The proxy runs as its own process (`python scripts/countproxy.py HOST:PORT`, controlled
by lines on its stdin, gone when stdin closes), so that its CPU time is its own and its
threads share no GIL with the harness's readers. Each client connection gets its own
connection to the server and two threads: one reads the client's requests (request line
and headers parsed, to name the S3 operation the way the embedded server does,
cwfs.server.ops; bodies forwarded by Content-Length or chunked framing) and one copies
the server's bytes back unparsed. Bodies in either direction move by os.splice through
a pipe, never whole in memory and never through Python buffers. Linux only (splice).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cwfs.server.ops import operation_name, parse_query, parse_target  # noqa: E402

CHUNK = 1 << 20  # bytes per splice (and the pipe's size, the most Linux allows by default)
HEAD_READ = 64 * 1024  # bytes per recv() while reading a request head
MAX_HEAD = 64 * 1024  # bytes of request line and headers before a request is refused


class ProtocolError(Exception):
    """The client sent something that is not an HTTP/1.1 request."""


class Splicer:
    """Moves bytes from one socket to another through a pipe, in the kernel."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        with contextlib.suppress(OSError):  # a smaller pipe only means more splices
            fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, CHUNK)

    def copy(self, src: socket.socket, dst: socket.socket, limit: int | None = None) -> int:
        """Up to `limit` bytes (None: until src's end of stream); the bytes moved."""
        moved = 0
        while limit is None or moved < limit:
            want = CHUNK if limit is None else min(CHUNK, limit - moved)
            got = os.splice(src.fileno(), self.write_end, want)
            if got == 0:
                break
            left = got
            while left:
                left -= os.splice(self.read_end, dst.fileno(), left)
            moved += got
        return moved

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)


class RequestReader:
    """The client side of one connection: request heads parsed, bodies forwarded."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.buffer = bytearray()
        self.splicer = Splicer()

    def _fill(self) -> bool:
        data = self.client.recv(HEAD_READ)
        self.buffer += data
        return bool(data)

    def _take(self, end: int) -> bytes:
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    def line(self, terminator: bytes = b"\r\n") -> bytes | None:
        """Bytes up to and with `terminator` (None: the client closed before any)."""
        while (end := self.buffer.find(terminator)) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise ProtocolError("request head too long")
            if not self._fill():
                if self.buffer:
                    raise ProtocolError("connection closed inside a request")
                return None
        return self._take(end + len(terminator))

    def forward(self, size: int) -> None:
        """Send the next `size` bytes of the request upstream: buffered ones, then spliced."""
        buffered = self._take(min(size, len(self.buffer)))
        self.upstream.sendall(buffered)
        rest = size - len(buffered)
        if self.splicer.copy(self.client, self.upstream, rest) < rest:
            raise ProtocolError("connection closed inside a request body")

    def forward_chunked(self) -> None:
        """A chunked body: each chunk's size line, its bytes, and the trailers."""
        while True:
            size_line = self.line()
            if size_line is None:
                raise ProtocolError("connection closed inside a chunked body")
            self.upstream.sendall(size_line)
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            self.forward(size + 2)  # the chunk and its CRLF
        while (trailer := self.line()) not in (None, b"\r\n"):
            self.upstream.sendall(trailer)
        self.upstream.sendall(b"\r\n")

    def close(self) -> None:
        self.splicer.close()


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Method, request target and headers (lower-case names) of a request head."""
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _ = lines[0].split(" ", 2)
    except ValueError:
        raise ProtocolError(f"not a request line: {lines[0][:100]!r}") from None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


def classify(method: str, target: str, headers: dict[str, str]) -> str:
    """The S3 operation name, as the embedded server would count it."""
    environ = {"RAW_URI": target}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    where = parse_target(environ)
    return operation_name(method, where, parse_query(where.raw_query), environ)


class CountingProxy:
    """Listens on 127.0.0.1 and forwards every connection to `upstream`, counting requests
    by S3 operation. Threads are daemons; close() stops accepting."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def _connection(self, client: socket.socket) -> None:
        """One client connection: requests forwarded here, responses by a second thread."""
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        responses = threading.Thread(target=self._responses, args=(upstream, client), daemon=True)
        responses.start()
        reader = RequestReader(client, upstream)
        try:
            self._requests(reader)
        except (OSError, ProtocolError, ValueError):
            pass  # the connection ends; the client sees it closed
        finally:
            reader.close()
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)
            responses.join()
            client.close()
            upstream.close()

    def _requests(self, reader: RequestReader) -> None:
        while (head := reader.line(b"\r\n\r\n")) is not None:
            method, target, headers = parse_head(head)
            with self._lock:
                self._counts[classify(method, target, headers)] += 1
            reader.upstream.sendall(head)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                reader.forward_chunked()
            elif (length := int(headers.get("content-length") or 0)) > 0:
                reader.forward(length)

    @staticmethod
    def _responses(upstream: socket.socket, client: socket.socket) -> None:
        """The server's bytes back to the client, unparsed, until the server closes."""
        splicer = Splicer()
        try:
            splicer.copy(upstream, client)
        except OSError:
            pass
        finally:
            splicer.close()
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)  # also ends the request thread's recv


def serve(upstream: str) -> None:
    """The proxy process: prints its URL, then answers `counts` (a JSON line) and `reset`
    on stdin until stdin closes."""
    host, _, port = upstream.rpartition(":")
    proxy = CountingProxy((host, int(port)))
    print(proxy.url, flush=True)
    for line in sys.stdin:
        if line.strip() == "reset":
            proxy.reset()
        print(json.dumps(proxy.counts()), flush=True)
    proxy.close()


class ProxyProcess:
    """The harness's handle on a proxy process in front of `upstream` (HOST:PORT)."""

    def __init__(self, upstream: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, upstream],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self._proc.pid
        self._lock = threading.Lock()
        self.url = self._line()

    def _line(self) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the counting proxy exited with {self._proc.wait()}")
        return line.strip()

    def _ask(self, command: str) -> dict[str, int]:
        assert self._proc.stdin is not None
        with self._lock:
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
            counts: dict[str, int] = json.loads(self._line())
        return counts

    def counts(self) -> dict[str, int]:
        """Requests by S3 operation since the last reset."""
        return self._ask("counts")

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        """Close its stdin (it exits), then wait; SIGKILL by PID if it does not."""
        with contextlib.suppress(OSError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


if __name__ == "__main__":
    serve(sys.argv[1])
