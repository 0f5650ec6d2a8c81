"""A server process in its own process group, with its output kept in a log file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ServerFailed(RuntimeError):
    """A server exited or never became ready; the message carries its log tail."""


class ManagedProcess:
    def __init__(self, name: str, cmd: list[str], log: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None, extra_logs: tuple[Path, ...] = ()) -> None:
        self.name = name
        self.cmd = cmd
        self.log = log
        self.cwd = cwd
        self.env = env
        self.extra_logs = extra_logs  # files the server writes by itself, shown beside its output
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            # A session of its own: stopping kills the whole group, so no JVM or child is left behind.
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in (self.log, *self.extra_logs):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            parts.append(f"[{path.name}]\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts) or "(no log)"

    def fail(self, why: str) -> ServerFailed:
        return ServerFailed(f"{self.name}: {why}\n--- last lines of {self.log} ---\n{self.log_tail()}")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.fail(f"exited with code {self.proc.returncode} before {what}")
            try:
                if ready():
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise self.fail(f"not {what} after {timeout:.0f}s")

    def again(self) -> ManagedProcess:
        """A new process with the same command, directory, environment and log (a restart after ``stop``)."""
        return ManagedProcess(self.name, self.cmd, self.log, self.cwd, self.env, self.extra_logs)

    def stop(self, timeout: float = 10) -> None:
        kill_group(self.proc.pid, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1)


def kill_group(pgid: int, timeout: float = 15) -> None:
    """SIGTERM the process group, then SIGKILL whatever is still there after ``timeout``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        # Reap our own child if it is one, so that the group can disappear.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pgid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
