"""Free loopback ports."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
PORTS_FROM = 20000  # servers of the tests take ports from here up to the ephemeral range
_random = random.Random()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (and for bind to port 0)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port the kernel picks for bind(0) comes from the ephemeral range, which it also uses as the
    source port of outgoing connections: between the test choosing it and a server (a JVM, seconds
    later) binding it, a client connection could take it ("Address already in use"). Below that range
    only other chosen ports compete, and each is checked free when chosen.
    """
    low = _ephemeral_range()[0]
    for _ in range(500):
        port = _random.randrange(PORTS_FROM, low)
        if _port_is_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded machine: let the kernel pick
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def free_port_block(below: int = 0, above: int = 0) -> int:
    """A free port P whose neighbours P-below .. P+above are free as well.

    RocketMQ's broker also listens on ``listenPort - 2`` (fast channel) and ``listenPort + 1`` (HA).
    """
    for _ in range(200):
        port = free_port()
        if port - below < 1024 or port + above > 65535:
            continue
        if all(_port_is_free(p) for p in range(port - below, port + above + 1)):
            return port
    raise RuntimeError("no block of free loopback ports found")


def wait_for_port(port: int, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return True
        time.sleep(0.1)
    return False
