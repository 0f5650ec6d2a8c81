"""Builds and downloads the servers of the test environment into a cache outside the repository.

Each artefact lives in ``<cache>/<name>-<version>/`` and is written atomically: a half-finished
build never counts as cached. The cache is ``$EVENTFERRY_TESTENV_CACHE`` or
``~/.cache/eventferry-testenv``.
"""

from __future__ import annotations

import json
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
    env: tuple[tuple[str, str], ...] = ()  # extra build environment, e.g. (("GOTOOLCHAIN", "go1.27.3"),)

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
        _go_build(self.module_dir, self.package, tmp, f"building {self.name} {self.version} (cold: several minutes)",
                  dict(self.env))
        tmp.rename(self.binary)
        return self.binary


def _go_build(module_dir: str, package: str, out: Path, what: str, env: dict[str, str],
              ldflags: str = "") -> None:
    cmd = ["go", "build", "-o", str(out)]
    if ldflags:
        cmd.append(f"-ldflags={ldflags}")
    _run([*cmd, package], HERE / "go" / module_dir, what, dict(os.environ, CGO_ENABLED="0", **env))


@dataclass(frozen=True)
class Keda:
    """KEDA's operator and metrics API server, built from one Go module, with KEDA's CRDs beside them.

    The CRDs are not part of a binary build: they come from the module's source, which
    ``go mod download -json`` locates in the module cache.
    """

    version: str
    module_dir: str = "keda"
    module: str = "github.com/kedacore/keda/v2"
    env: tuple[tuple[str, str], ...] = ()

    @property
    def directory(self) -> Path:
        return cache_root() / f"keda-{self.version}"

    @property
    def operator(self) -> Path:
        return self.directory / "keda-operator"

    @property
    def metrics_apiserver(self) -> Path:
        return self.directory / "keda-metrics-apiserver"

    @property
    def crds(self) -> Path:
        return self.directory / "crds"

    def ensure(self) -> Path:
        if (self.directory / "complete").exists():
            return self.directory
        if shutil.which("go") is None:
            raise ProvisionError("building KEDA needs Go (the 'go' command) on PATH")
        # Everything goes into a directory of its own that is renamed into place when complete.
        tmp = self.directory.with_name(self.directory.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "crds").mkdir(parents=True)
        env = dict(self.env)
        ldflags = f"-X={self.module}/version.Version={self.version} -X={self.module}/version.GitCommit={self.version}"
        for binary, package in (("keda-operator", "cmd/operator"), ("keda-metrics-apiserver", "cmd/adapter")):
            _go_build(self.module_dir, f"{self.module}/{package}", tmp / binary,
                      f"building {binary} {self.version} (cold: the largest Go build, many minutes)", env, ldflags)
        source = self._module_source(env)
        bases = source / "config" / "crd" / "bases"
        crds = sorted(bases.glob("*.yaml"))
        if not crds:
            raise ProvisionError(f"no KEDA CRDs found under {bases}")
        for crd in crds:
            shutil.copyfile(crd, tmp / "crds" / crd.name)
        progress(f"copied {len(crds)} KEDA CRDs from {bases}")
        (tmp / "complete").write_text(self.version)
        shutil.rmtree(self.directory, ignore_errors=True)
        tmp.rename(self.directory)
        return self.directory

    def _module_source(self, env: dict[str, str]) -> Path:
        done = subprocess.run(["go", "mod", "download", "-json", f"{self.module}@{self.version}"],
                              cwd=HERE / "go" / self.module_dir, capture_output=True, text=True,
                              env=dict(os.environ, **env))
        if done.returncode != 0:
            raise ProvisionError(f"go mod download {self.module}@{self.version} failed:\n{done.stdout}\n{done.stderr}")
        return Path(json.loads(done.stdout)["Dir"])


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
KUBE_CONTROLLER_MANAGER = GoCommand("kube-controller-manager", versions.KUBERNETES, "kube",
                                    "k8s.io/kubernetes/cmd/kube-controller-manager")
ETCD = GoCommand("etcd", versions.ETCD, "etcd", ".")
HELM = GoCommand("helm", versions.HELM, "helm", "helm.sh/helm/v3/cmd/helm")
KAFKA = MavenLibs("kafka", versions.KAFKA, "kafka", "kafka.version")
ROCKETMQ = MavenLibs("rocketmq", versions.ROCKETMQ, "rocketmq", "rocketmq.version")
KEDA = Keda(versions.KEDA)


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
    for item in (ETCD, KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, HELM, KAFKA, ROCKETMQ, KEDA):
        item.ensure()
    kubectl()
    java()
    progress(f"all servers provisioned in {time.monotonic() - started:.1f}s (cache: {cache_root()})")
