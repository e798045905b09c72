"""Embedded S3 server for cwfs demos, tests and benchmarks (moto underneath).

Not used by the filesystem itself. Importing this package is cheap: moto is only
imported when a server actually runs (``main``), so ``EmbeddedServer`` (the client
that spawns and controls a server process) needs only boto3.
"""

from __future__ import annotations

from .control import EmbeddedServer


def main(argv: list[str] | None = None) -> int:
    """Run the server in this process (see ``python -m cwfs.server --help``)."""
    from .cli import main as _main

    return _main(argv)


__all__ = ["EmbeddedServer", "main"]
