"""``python -m cwfs.server``: run the embedded S3 server until SIGTERM/SIGINT.

Prints exactly one JSON line on stdout when ready (the contract EmbeddedServer and the
``cwfs server`` subcommand rely on); everything else goes to the log on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

log = logging.getLogger("cwfs.server")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the server's options to ``parser`` (or a new one) so a CLI can reuse them."""
    from .state import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY

    parser = parser or argparse.ArgumentParser(
        prog="python -m cwfs.server", description="Embedded S3 server (moto-based) for cwfs"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="primary endpoint port (0 = any free)")
    parser.add_argument(
        "--lota-port",
        type=int,
        default=None,
        help="also serve a 'lota' endpoint on this port (0 = any free)",
    )
    parser.add_argument(
        "--bucket",
        action="append",
        default=[],
        metavar="NAME",
        help="create this bucket at start (repeatable)",
    )
    parser.add_argument(
        "--demo", action="store_true", help="create bucket 'demo' with sample files and folders"
    )
    parser.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="exit when the parent process goes away (used by EmbeddedServer)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log every request")
    parser.add_argument(
        "--moto-listing",
        action="store_true",
        help="list with moto's own walk of the whole bucket, not the sorted index "
        "(slow; to compare the two)",
    )
    return parser


def _watch_parent(stop: threading.Event) -> None:
    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.info("parent process %d went away; stopping", parent)
            stop.set()


def _make_servers(args: argparse.Namespace) -> dict[str, Any]:
    """One HTTP server per endpoint (primary, and LOTA if asked), sharing one S3 state."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    from .app import CwfsApp
    from .backend import ensure_bucket
    from .keyindex import install
    from .seed import DEMO_BUCKET, demo_objects, seed_objects
    from .state import ServerState

    install(list_from_index=not args.moto_listing)  # before any bucket exists
    ports = {"primary": args.port}
    if args.lota_port is not None:
        ports["lota"] = args.lota_port
    state = ServerState(
        endpoints=list(ports), access_key=args.access_key, secret_key=args.secret_key
    )
    moto_app = DomainDispatcherApplication(create_backend_app)
    servers: dict[str, Any] = {}
    for name, port in ports.items():
        servers[name] = make_server(
            args.host,
            port,
            CwfsApp(moto_app, state, name),
            threaded=True,
            request_handler=MotoRequestHandler,
        )
    with state.lock:
        for bucket in args.bucket:
            ensure_bucket(state.backend, bucket)
        if args.demo:
            seed_objects(state.backend, DEMO_BUCKET, demo_objects())
    return servers


def run(args: argparse.Namespace) -> int:
    """Start the endpoint(s), set up buckets, announce readiness, serve until signalled."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.WARNING)

    servers = _make_servers(args)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threads = [
        threading.Thread(target=srv.serve_forever, name=f"s3-{name}", daemon=True)
        for name, srv in servers.items()
    ]
    for thread in threads:
        thread.start()
    if args.exit_with_parent:
        threading.Thread(target=_watch_parent, args=(stop,), daemon=True).start()

    urls = {name: f"http://{args.host}:{srv.server_port}" for name, srv in servers.items()}
    ready = {"primary": urls["primary"], "lota": urls.get("lota"), "pid": os.getpid()}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    log.info(
        "serving %s (buckets: %s%s)",
        ", ".join(f"{k}={v}" for k, v in urls.items()),
        ", ".join(args.bucket) or "none",
        ", demo" if args.demo else "",
    )
    while not stop.wait(0.5):
        pass
    log.info("shutting down")
    for srv in servers.values():
        srv.shutdown()
        srv.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m cwfs.server`` and the ``cwfs server`` subcommand."""
    return run(build_parser().parse_args(argv))
