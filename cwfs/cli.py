"""Command line: ``cwfs mount``, ``server``, ``demo``, ``warm`` and ``recover``, and
mount(8)'s helper form ``cwfs BUCKET DIR -o OPTIONS`` (`cwfs.mounthelper`).

Without ``--foreground``, ``cwfs mount`` starts the filesystem in a background process
and returns only once the mount is ready, or fails with the reason (like mount-s3).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import trio

from cwfs import recover, warm
from cwfs.config import Config, ConfigError, add_mount_arguments, build_config, state_dir
from cwfs.launch import READY, MountStartError, start_mount
from cwfs.mounthelper import MountOptionError, is_helper_form, mount_arguments
from cwfs.warm import add_warm_arguments

log = logging.getLogger("cwfs")


def setup_logging(level: str, log_file: Path | None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler()
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # botocore's debug output carries request headers (session tokens): never below INFO.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))


def _default_log_file(bucket: str) -> Path:
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    return state / f"{bucket}.log"


def _mount_in_background(argv: list[str], config: Config) -> int:
    """Start the mount in a new session and wait until it reports ready or failed."""
    log_file = config.log_file or _default_log_file(config.bucket)
    try:
        start_mount(argv[1:], log_file=log_file, detach=True)  # argv[0] is "mount"
    except MountStartError as exc:
        print(f"cwfs: {exc}", file=sys.stderr)
        return 1
    return 0


def _mount(argv: list[str], args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except ConfigError as exc:
        print(f"cwfs: {exc}", file=sys.stderr)
        return 2
    if not config.foreground:
        return _mount_in_background(argv, config)

    from cwfs.mount import serve
    from cwfs.preflight import MountError

    setup_logging(config.log_level, config.log_file)

    def ready(error: str | None) -> None:
        if error is not None:
            log.error("%s", error)
        if args.ready_fd is not None:
            with os.fdopen(args.ready_fd, "w") as pipe:
                pipe.write(f"{error or READY}\n")
            args.ready_fd = None

    try:
        status = trio.run(serve, config, ready)
    except MountError as exc:
        if config.log_file is not None:
            print(f"cwfs: {exc}", file=sys.stderr)
        return 1
    except Exception:
        log.critical(
            "cwfs stopped on an unexpected error, unmounting %s", config.mountpoint, exc_info=True
        )
        return 70  # EX_SOFTWARE: a bug, with its traceback in the log
    return status


def _stats(args: argparse.Namespace) -> int:
    from cwfs.stats import query, render

    try:
        figures = query(args.mountpoint)
    except (OSError, ValueError) as exc:
        print(
            f"cwfs: no cwfs mount answers at {args.mountpoint} ({exc}): is it mounted, "
            "and by this user?",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(figures, indent=2) if args.json else render(figures))
    return 0


COMMANDS = ("mount", "server", "demo", "warm", "recover", "stats")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cwfs", description="Mount a CoreWeave AI Object Storage bucket as a directory."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    mount = commands.add_parser("mount", help="mount a bucket")
    add_mount_arguments(mount)
    mount.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    commands.add_parser(
        "server", help="run the embedded S3 server (for trying cwfs and for tests)", add_help=False
    )
    commands.add_parser(
        "demo", help="mount a sample bucket from the embedded S3 server until Ctrl-C"
    )
    add_warm_arguments(commands.add_parser("warm", help="pre-stage objects into the LOTA cache"))
    recover.add_recover_arguments(
        commands.add_parser("recover", help="list data mounts could not upload; upload it")
    )
    stats = commands.add_parser("stats", help="statistics of a running mount")
    stats.add_argument("mountpoint", type=Path, help="where the mount is")
    stats.add_argument("--json", action="store_true", help="print them as JSON, for scripts")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if is_helper_form(argv, COMMANDS):
        try:
            argv = mount_arguments(argv)
        except MountOptionError as exc:
            print(f"cwfs: {exc}", file=sys.stderr)
            return 2
    if argv[:1] == ["server"]:
        from cwfs.server import main as server_main

        return server_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "warm":
        return warm.run(args)
    if args.command == "recover":
        return recover.run(args)
    if args.command == "stats":
        return _stats(args)
    if args.command == "demo":
        from cwfs.server.demo import run_demo

        return run_demo()
    return _mount(argv, args)
