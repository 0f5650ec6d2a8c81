"""A set of running servers that outlives the command that started it (``python -m tests.env up``).

Its state (process groups, addresses) is a JSON file in the sandbox directory, so ``down`` and
``status`` work from any shell, and the pytest fixtures reuse a running sandbox when
``EVENTFERRY_SANDBOX`` points at its directory.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.env import provision
from tests.env.process import kill_group
from tests.env.servers import Kafka, Keda, KubeAPI, KubeControllers, RocketMQ, Server

COMPONENTS: dict[str, type[Server]] = {"kube": KubeAPI, "kafka": Kafka, "rocketmq": RocketMQ,
                                       "kube-controllers": KubeControllers, "keda": Keda}
NEEDS: dict[str, tuple[str, ...]] = {"kube-controllers": ("kube",), "keda": ("kube", "kube-controllers")}


def sandbox_dir() -> Path:
    return Path(os.environ.get("EVENTFERRY_SANDBOX") or provision.cache_root() / "sandbox")


@dataclass
class SandboxState:
    directory: Path
    exports: dict[str, str]
    process_groups: dict[str, int]
    extra: dict[str, dict[str, str]]

    @property
    def file(self) -> Path:
        return self.directory / "state.json"

    def save(self) -> None:
        self.file.write_text(json.dumps({"exports": self.exports, "process_groups": self.process_groups,
                                         "extra": self.extra}, indent=2))

    @classmethod
    def load(cls, directory: Path) -> SandboxState | None:
        try:
            data = json.loads((directory / "state.json").read_text())
        except FileNotFoundError:
            return None
        return cls(directory, data["exports"], data["process_groups"], data.get("extra", {}))

    def alive(self) -> dict[str, bool]:
        result = {}
        for name, pgid in self.process_groups.items():
            try:
                os.killpg(pgid, 0)
                result[name] = True
            except ProcessLookupError:
                result[name] = False
        return result


def up(components: list[str]) -> SandboxState:
    directory = sandbox_dir()
    existing = SandboxState.load(directory)
    if existing and all(existing.alive().values()):
        return existing
    if existing:
        down()
    directory.mkdir(parents=True, exist_ok=True)
    state = SandboxState(directory, {}, {}, {})
    started: dict[str, Server] = {}
    for name in components:
        missing = [need for need in NEEDS.get(name, ()) if need not in started]
        if missing:
            raise RuntimeError(f"{name} needs {', '.join(missing)} started before it (list them first)")
        provision.progress(f"starting {name}")
        needs = [started[need] for need in NEEDS.get(name, ()) if need == "kube"]
        server = COMPONENTS[name].start(directory / name, *needs)  # type: ignore[attr-defined]
        started[name] = server
        state.exports.update(server.exports())
        for proc in server.processes:
            state.process_groups[proc.name] = proc.pid
        state.extra[name] = {"workdir": str(server.workdir)}
        state.save()
    return state


def down() -> bool:
    directory = sandbox_dir()
    state = SandboxState.load(directory)
    if state is None:
        return False
    for pgid in reversed(list(state.process_groups.values())):
        kill_group(pgid, timeout=10)
    shutil.rmtree(directory, ignore_errors=True)
    return True
