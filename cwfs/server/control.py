"""Start, drive and stop an embedded S3 server process from Python (tests, bench, demo).

The server runs as a subprocess (``python -m cwfs.server``) so that its threads and
moto's global state never mix with the code under test, and it is stopped by PID.
Control calls use only urllib (no proxies) against the unsigned ``/_cwfs/`` API.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

DEFAULT_ACCESS_KEY = "cwfs-demo"
DEFAULT_SECRET_KEY = "cwfs-demo-secret"
REGION = "us-east-1"


class ServerStartError(RuntimeError):
    """The server process did not announce itself in time (message has its stderr tail)."""


class EmbeddedServer:
    """Handle on a running server process; use :meth:`start` to create one."""

    def __init__(
        self,
        process: subprocess.Popen,
        ready: dict[str, Any],
        stderr_path: str,
        access_key: str,
        secret_key: str,
    ) -> None:
        self._process = process
        self._stderr_path = stderr_path
        self.url: str = ready["primary"]
        self.lota_url: str | None = ready.get("lota")
        self.pid: int = int(ready["pid"])
        self.access_key, self.secret_key = access_key, secret_key
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- lifecycle -------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        buckets: Iterable[str] = (),
        lota: bool = False,
        demo: bool = False,
        extra_args: Iterable[str] = (),
        timeout: float = 60.0,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
    ) -> EmbeddedServer:
        """Spawn ``python -m cwfs.server`` and wait for its JSON ready line."""
        argv = [
            sys.executable,
            "-m",
            "cwfs.server",
            "--port",
            "0",
            "--exit-with-parent",
            "--access-key",
            access_key,
            "--secret-key",
            secret_key,
        ]
        for bucket in buckets:
            argv += ["--bucket", bucket]
        if lota:
            argv += ["--lota-port", "0"]
        if demo:
            argv.append("--demo")
        argv += list(extra_args)
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        stderr = tempfile.NamedTemporaryFile(prefix="cwfs-server-", suffix=".log", delete=False)
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, env=env, stdin=subprocess.DEVNULL
        )
        stderr.close()
        try:
            line = cls._read_ready_line(process, timeout)
            ready = json.loads(line)
        except (ServerStartError, ValueError) as exc:
            process.kill()
            process.wait()
            tail = Path(stderr.name).read_text(errors="replace")[-4000:]
            raise ServerStartError(
                f"embedded S3 server failed to start: {exc}\n--- stderr tail ---\n{tail}"
            ) from None
        server = cls(process, ready, stderr.name, access_key, secret_key)
        log.info(
            "embedded S3 server pid %d at %s (lota %s)", server.pid, server.url, server.lota_url
        )
        return server

    @staticmethod
    def _read_ready_line(process: subprocess.Popen, timeout: float) -> str:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline, buffer = time.monotonic() + timeout, b""
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerStartError(f"no ready line within {timeout:.0f}s")
            if not selector.select(left):
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise ServerStartError(f"process exited with status {process.wait()}")
            buffer += chunk
        return buffer.split(b"\n", 1)[0].decode()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server by PID, wait, SIGKILL if it lingers."""
        if self._process.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self._process.wait()
            except ProcessLookupError:
                pass
        if self._process.stdout is not None:
            self._process.stdout.close()
        try:
            os.unlink(self._stderr_path)
        except OSError:
            pass

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control API ----------------------------------------------------------------
    def _call(self, method: str, name: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/_cwfs/{name}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            raise RuntimeError(
                f"control call {method} {name} failed: {err.code} "
                f"{err.read().decode(errors='replace')}"
            ) from None

    def all_counts(self) -> dict[str, dict[str, int]]:
        """Request counts per endpoint name and operation."""
        return self._call("GET", "counts")

    def counts(self, endpoint: str = "primary") -> dict[str, int]:
        """Request counts per operation for one endpoint."""
        return self.all_counts().get(endpoint, {})

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """Recent requests (oldest first); ``since`` skips entries with seq <= since."""
        return self._call("GET", f"requests?since={since}" if since else "requests")

    def reset(self) -> None:
        """Clear counts and the request log."""
        self._call("POST", "reset")

    def add_fault(self, **rule: Any) -> dict[str, Any]:
        """Add a fault rule: op, endpoint, key_prefix, bucket, status, code, message, times,
        after, phase, delay (seconds to hold the request first).

        ``phase="after"`` carries the request out and then answers the error instead of
        the real response (a lost response: the client's retry sees its own first attempt).
        ``phase="slow"`` answers normally, ``delay`` seconds before each body chunk.
        ``phase="cut"`` sends the first ``cut_at`` bytes of the body, then drops the
        connection (a reset midway through a response); ``phase="reset"`` drops it
        without carrying the request out (an outage).
        """
        return self._call("POST", "faults", rule)

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "faults")

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def seed(
        self, bucket: str, objects: Iterable[dict[str, Any]], create_bucket: bool = True
    ) -> list[dict[str, Any]]:
        """Create objects directly in the store (uncounted); returns key/size/etag of each."""
        result = self._call(
            "POST",
            "seed",
            {"bucket": bucket, "objects": list(objects), "create_bucket": create_bucket},
        )
        return result["objects"]

    # -- boto3 ------------------------------------------------------------------------
    def endpoint_url(self, endpoint: str = "primary") -> str:
        url = self.lota_url if endpoint == "lota" else self.url
        if url is None:
            raise ValueError("this server has no lota endpoint (start it with lota=True)")
        return url

    def client(self, addressing: str = "path", endpoint: str = "primary", **config: Any) -> Any:
        """A boto3 S3 client for this server; extra keyword args go into botocore Config.

        Virtual-hosted addressing uses the proxy trick: the endpoint is
        ``http://localhost:PORT`` and the server itself is the HTTP proxy, so the request
        carries ``Host: <bucket>.localhost:PORT`` without any DNS for ``*.localhost``.
        """
        import boto3
        from botocore.config import Config

        url = self.endpoint_url(endpoint)
        s3_config = dict(config.pop("s3", {}) or {})
        s3_config["addressing_style"] = addressing
        if addressing == "virtual":
            port = urlsplit(url).port
            config.setdefault("proxies", {"http": url})
            url = f"http://localhost:{port}"
        return boto3.client(
            "s3",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3=s3_config, **config),
        )
