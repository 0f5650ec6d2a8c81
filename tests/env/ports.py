"""Free loopback ports."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
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
