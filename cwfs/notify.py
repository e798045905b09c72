"""systemd's service notifications, sent without libsystemd.

A unit with ``Type=notify`` counts as started when its service sends ``READY=1``: cwfs
sends it once the mount answers, with a ``STATUS=`` line saying what is mounted from
where, and ``STOPPING=1`` when it starts unmounting. The protocol is one datagram of
``KEY=value`` lines to the Unix socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` is
the abstract namespace). Outside systemd the variable is unset and nothing is sent; a
socket that cannot be reached is logged, never fatal to the mount.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def notify(*fields: str) -> bool:
    """Send ``fields`` (``KEY=value`` each) to systemd; whether a socket took them."""
    address = os.environ.get(NOTIFY_SOCKET, "")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall("\n".join(fields).encode())
    except OSError as exc:
        log.warning("could not notify systemd at %s: %s", address, exc)
        return False
    return True


def ready(status: str) -> None:
    """The mount answers: ``READY=1`` from this process, which may not be the one
    systemd started (``cwfs mount`` without ``--foreground``), so it names itself."""
    notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def stopping(status: str) -> None:
    """Unmounting has started."""
    notify("STOPPING=1", f"STATUS={status}")
