"""The package as the image runs it: a wheel installed (not editable) into a virtual environment at
the image's path ``/opt/eventferry``, every entry point of the chart and the operator run as the
chart runs them: uid/gid 65532, no capabilities, no privilege escalation, the root filesystem
read-only, a writable ``/tmp`` only where the chart mounts an emptyDir (operator and broker; the
adapter Deployments the operator writes have none).

No container engine runs in CI (docs/image.md), so each command runs in a mount namespace of its own
(``unshare --mount``, util-linux): everything remounted read-only, a tmpfs on ``/tmp`` where the
chart has one, then ``setpriv`` to the chart's uid. That takes root, which CI has. A write the
filesystem refuses could still be swallowed (Python skips a bytecode file it cannot write), so an
audit hook (``sitecustomize`` on ``PYTHONPATH``, outside the install) reports every attempt to
open a file for writing or to create, rename or remove one outside the writable mounts, and the test
fails on any.

The dependencies' wheels are cached in the test environment cache (keyed by the declared
requirements); the project's wheel is built every run from a copy of what the Dockerfile copies.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from eventferry.contract import model
from tests.env.ports import free_port
from tests.env.provision import cache_root, progress
from tests.env.servers import Kafka
from tests.support.subscriber import Subscribers

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/opt/eventferry"  # the Dockerfile's virtual environment
UID = 65532  # the chart's podSecurityContext and the Dockerfile's USER
WRITE_MARK = "eventferry-test: write attempted:"

# Installed as sitecustomize.py: reports writes outside the writable mounts (EVENTFERRY_TEST_WRITABLE).
AUDIT_HOOK = f"""
import os, sys
_WRITABLE = tuple(p for p in os.environ.get("EVENTFERRY_TEST_WRITABLE", "").split(":") if p) + ("/dev/",)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_CHANGES = {{"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link", "os.truncate",
            "os.chmod", "os.chown", "os.utime", "shutil.copyfile", "shutil.move", "shutil.rmtree"}}

def _report(event, path):
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        return
    full = os.path.abspath(path)
    if not (full + "/").startswith(_WRITABLE):
        sys.stderr.write(f"{WRITE_MARK} {{event}} {{full}}\\n")

def _hook(event, args):
    if event == "open" and args:
        path, mode, flags = (tuple(args) + (None, None))[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS)
        if writes:
            _report(event, path)
    elif event in _CHANGES and args:
        _report(event, args[0])

sys.addaudithook(_hook)
"""


def _sha(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _pip(python: str, *args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


def _source_copy(dest: Path) -> Path:
    """What the Dockerfile copies into its build stage, and nothing else."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def _wheelhouse(source: Path) -> Path:
    """Wheels of the dependencies and the build backend, downloaded once per set of requirements."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requires = project["build-system"]["requires"]
    key = _sha(json.dumps([project["project"]["dependencies"], requires]), sys.version, sys.platform)
    house = cache_root() / f"install-wheels-{key}"
    if (house / "complete").exists():
        return house
    progress(f"downloading the wheels of eventferry's dependencies into {house} (once per set of requirements)")
    tmp = house.with_name(house.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _pip(sys.executable, "wheel", "--quiet", "--wheel-dir", str(tmp), str(source))
    _pip(sys.executable, "download", "--quiet", "--dest", str(tmp), *requires)
    for own in tmp.glob("eventferry-*.whl"):
        own.unlink()
    (tmp / "complete").write_text(key)
    shutil.rmtree(house, ignore_errors=True)
    tmp.rename(house)
    return house


def _hidden_ancestor(path: Path) -> Path | None:
    """The outermost directory above ``path`` that another user may not traverse (e.g. /root)."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            return parent
    return None


@dataclass(frozen=True)
class Install:
    venv: Path  # the host directory mounted at PREFIX
    hook: Path  # the directory holding the audit hook's sitecustomize.py
    python_prefix: Path  # the interpreter's installation the virtual environment links to

    def namespace_script(self, volumes: Sequence[tuple[Path, str, bool]], tmp: bool) -> tuple[str, str]:
        """Shell lines, run as root in a new mount namespace, that leave the filesystem as the pod
        has it, and the writable paths; ``volumes`` are (host path, path under /opt, writable)."""
        q = shlex.quote
        lines = ["set -eu",
                 "mount -t tmpfs -o mode=0755 eventferry-opt /opt",
                 f"mkdir {PREFIX} /opt/.audit && mount --bind {q(str(self.venv))} {PREFIX}",
                 f"mount --bind {q(str(self.hook))} /opt/.audit"]
        writable = ["/tmp"] if tmp else []
        for host, target, rw in volumes:
            lines.append(f"mkdir -p {q(target)} && mount --bind {q(str(host))} {q(target)}")
            if rw:
                writable.append(target)
        hidden = _hidden_ancestor(self.python_prefix)
        if hidden is not None:  # the interpreter at its own path, the rest of e.g. /root out of sight
            prefix = q(str(self.python_prefix))
            lines += [f"mkdir /opt/.python && mount --bind {prefix} /opt/.python",
                      f"mount -t tmpfs -o mode=0755 eventferry-hide {q(str(hidden))}",
                      f"mkdir -p {prefix} && mount --bind /opt/.python {prefix}"]
        if tmp:
            lines.append("mount -t tmpfs -o mode=1777 eventferry-tmp /tmp")
        keep = " ".join(q(path) for path in writable)
        lines += [
            "for mp in $(awk '{print $5}' /proc/self/mountinfo); do",
            "  case $mp in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac",
            f"  for w in {keep} ''; do [ \"$mp\" = \"$w\" ] && continue 2; done",
            "  mount -o remount,bind,ro \"$mp\"",
            "done",
        ]
        return "\n".join(lines) + "\n", ":".join(writable)

    def command(self, args: Sequence[str], *, env: dict[str, str] | None = None,
                volumes: Sequence[tuple[Path, str, bool]] = (), tmp: bool = True) -> list[str]:
        script, writable = self.namespace_script(volumes, tmp)
        environment = {
            # The image's environment (Dockerfile ENV) but PYTHONDONTWRITEBYTECODE: without it, a
            # module compiled at run time would show as a write, so the installed bytecode is checked too.
            "PATH": f"{PREFIX}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": "/opt/.audit", "EVENTFERRY_TEST_WRITABLE": writable, **(env or {}),
        }
        drop = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--no-new-privs",
                "--inh-caps=-all", "--bounding-set=-all", "--", "env", "-i",
                *(f"{k}={v}" for k, v in environment.items()), "eventferry", *args]
        script += "exec " + " ".join(shlex.quote(part) for part in drop) + "\n"
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    if os.geteuid() != 0:
        pytest.fail("this test makes mount namespaces and drops to uid 65532: it must run as root (CI does)")
    for tool in ("unshare", "setpriv", "mount"):
        assert shutil.which(tool), f"{tool} (util-linux) is missing"
    base = tmp_path_factory.mktemp("install")
    started = time.monotonic()
    source = _source_copy(base / "src")
    house = _wheelhouse(source)
    dist = base / "dist"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_FIND_LINKS")}
    # The project's wheel, as `pip install .` in the Dockerfile builds it (isolated build, offline).
    _pip(sys.executable, "wheel", "--quiet", "--no-deps", "--no-index", "--find-links", str(house),
         "--wheel-dir", str(dist), str(source), env=env)
    [wheel] = dist.glob("eventferry-*.whl")
    venv = base / "venv"
    venv.mkdir(mode=0o755)
    venv.chmod(0o755)
    hook = base / "audit"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(AUDIT_HOOK)
    for path in (hook, hook / "sitecustomize.py"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    # Created at /opt/eventferry, the path its scripts name, as in the image.
    q = shlex.quote
    script = "\n".join([
        "set -eu", "mount -t tmpfs -o mode=0755 eventferry-opt /opt",
        f"mkdir {PREFIX} && mount --bind {q(str(venv))} {PREFIX}",
        f"{q(str(python))} -m venv {PREFIX}",
        f"{PREFIX}/bin/python -m pip install --quiet --disable-pip-version-check --no-index "
        f"--find-links {q(str(house))} {q(str(wheel))}",
    ])
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"installing {wheel.name} failed:\n{done.stdout}\n{done.stderr}"
    progress(f"eventferry installed from {wheel.name} into a fresh {PREFIX} in {time.monotonic() - started:.0f}s")
    return Install(venv, hook, Path(sys.base_prefix))


def _writes(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(WRITE_MARK)]


Volumes = Sequence[tuple[Path, str, bool]]


def run(install: Install, args: Sequence[str], *, volumes: Volumes = (), tmp: bool = True) -> (
        subprocess.CompletedProcess[str]):
    done = subprocess.run(install.command(args, volumes=volumes, tmp=tmp), capture_output=True, text=True,
                          timeout=120)
    assert not _writes(done.stderr), f"eventferry {' '.join(args)} tried to write:\n{done.stderr}"
    return done


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start(install: Install, processes: list[subprocess.Popen[str]], args: Sequence[str],
          log: Path, *, env: dict[str, str] | None = None, volumes: Volumes = (), tmp: bool = True,
          ) -> subprocess.Popen[str]:
    with log.open("w") as out:
        proc = subprocess.Popen(install.command(args, env=env, volumes=volumes, tmp=tmp), stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    processes.append(proc)
    return proc


def stop(proc: subprocess.Popen[str], log: Path) -> str:
    """SIGTERM (unshare, sh and setpriv exec: the pid is eventferry's); returns the output, checked."""
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    output = log.read_text()
    assert code == 0, f"exit code {code}:\n{output}"
    assert not _writes(output), f"tried to write:\n{output}"
    return output


def read(log: Path) -> str:
    return log.read_text()


async def status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return resp.status
    except aiohttp.ClientError:
        return 0


async def until_status(url: str, expected: int, proc: subprocess.Popen[str], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while await status(url) != expected:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{read(log)}"
        assert time.monotonic() < deadline, f"{url} did not answer {expected}:\n{read(log)}"
        await asyncio.sleep(0.2)


def test_the_sandbox_is_read_only_and_unprivileged(install: Install, tmp_path: Path) -> None:
    """The harness itself: as the pod's user, / and the install refuse writes, /tmp takes them."""
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    probe = ("import os\n"
             "print(os.getuid(), os.getgid(), os.getgroups())\n"
             "for p in ('/probe', '/opt/eventferry/probe', '/opt/out/probe', '/tmp/probe'):\n"
             "    try:\n"
             "        open(p, 'w').close(); print(p, 'writable')\n"
             "    except OSError as e:\n"
             "        print(p, e.strerror)\n")
    script = install.command(["unused"], volumes=[(out, "/opt/out", True)])
    script[-1] = script[-1].replace("eventferry unused", f"python -c {shlex.quote(probe)}")
    done = subprocess.run(script, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{UID} {UID} []"
    assert lines[1:] == ["/probe Read-only file system", "/opt/eventferry/probe Read-only file system",
                         "/opt/out/probe writable", "/tmp/probe writable"], done.stdout
    assert (out / "probe").stat().st_uid == UID


def test_the_installed_package_is_not_editable(install: Install) -> None:
    done = run(install, ["--version"])
    assert done.returncode == 0, done.stderr
    site = list(install.venv.glob("lib/python*/site-packages"))
    assert site and (site[0] / "eventferry" / "cli.py").exists()
    assert not list(site[0].glob("__editable__*")), "an editable install"
    modules = sorted((site[0] / "eventferry").rglob("*.py"))
    compiled = {p.parent.parent / (p.name.split(".")[0] + ".py") for p in (site[0] / "eventferry").rglob("*.pyc")}
    assert set(modules) <= compiled, f"modules without bytecode: {sorted(set(modules) - compiled)[:5]}"


def test_operator_help(install: Install) -> None:
    done = run(install, ["operator", "--help"])
    assert done.returncode == 0, done.stderr
    assert "usage: eventferry operator" in done.stdout


def test_crds_into_a_writable_directory(install: Install, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    done = run(install, ["crds", "--output", "/opt/out/crds", "--policies", "/opt/out/policies.yaml"],
               volumes=[(out, "/opt/out", True)])
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "crds").glob("*.yaml")) == sorted(
        p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert (out / "policies.yaml").read_text() == (ROOT / "config" / "admission-policies.yaml").read_text()


async def test_broker_serves_and_delivers_from_a_contract_file(install: Install, tmp_path: Path,
                                                               processes: list[subprocess.Popen[str]],
                                                               subscribers: Subscribers) -> None:
    sub = await subscribers()
    files = tmp_path / "contract"
    files.mkdir(mode=0o755)
    files.chmod(0o755)
    (files / "contract.json").write_text(model.Contract(generation=1, brokers=[model.Broker(
        namespace="default", name="b", broker_class="InMemory",
        triggers=[model.Trigger(namespace="default", name="t", subscriber=f"{sub.url}/got")])]).to_json())
    (files / "contract.json").chmod(0o644)
    port = free_port()
    log = tmp_path / "broker.log"
    # The chart's broker container: a /tmp emptyDir, the contract from a read-only volume here.
    proc = start(install, processes, ["broker", "--contract-file", "/opt/contract/contract.json", "--host",
                                      "127.0.0.1", "--port", str(port), "--log-level", "DEBUG"],
                 log, volumes=[(files, "/opt/contract", False)])
    base = f"http://127.0.0.1:{port}"
    await until_status(f"{base}/readyz", 200, proc, log)
    assert await status(f"{base}/healthz") == 200
    headers = {"ce-specversion": "1.0", "ce-id": "e1", "ce-source": "/t", "ce-type": "com.example.a"}
    async with aiohttp.ClientSession() as session, session.post(f"{base}/default/b", headers=headers,
                                                                data=b"x") as resp:
        assert resp.status == 202
    [got] = await sub.wait_for(1, "/got")
    assert got.event.id == "e1"
    stop(proc, log)


def adapter_env(kind: str, spec: dict[str, object], sink: str) -> dict[str, str]:
    return {"K_SINK": sink, "K_SOURCE_SPEC": json.dumps(spec), "K_SOURCE_NAME": f"{kind}-src",
            "K_SOURCE_NAMESPACE": "default", "K_SOURCE_UID": str(uuid.uuid4()), "K_METRICS_PORT": str(free_port()),
            "K_DRAIN_TIMEOUT": "3"}


@pytest.mark.parametrize("kind", ["kafka", "rocketmq"])
def test_adapter_without_configuration_fails_clearly(install: Install, kind: str) -> None:
    # The operator's adapter Deployment: no /tmp volume at all.
    done = run(install, ["adapter", kind], tmp=False)
    assert done.returncode == 2, done.stderr
    assert "invalid adapter configuration: K_SOURCE_NAME is not set" in done.stderr


async def test_kafka_adapter_delivers_a_record(install: Install, kafka: Kafka, tmp_path: Path,
                                               processes: list[subprocess.Popen[str]],
                                               subscribers: Subscribers) -> None:
    sub = await subscribers()
    topic = f"install-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"from-kafka")
    finally:
        await producer.stop()
    env = adapter_env("kafka", {"bootstrapServers": [kafka.bootstrap], "topics": [topic],
                                "consumerGroup": f"g-{topic}", "initialOffset": "earliest",
                                "sink": {"uri": f"{sub.url}/k"}}, f"{sub.url}/k")
    log = tmp_path / "kafka-adapter.log"
    proc = start(install, processes, ["adapter", "kafka"], log, env=env, tmp=False)
    [got] = await sub.wait_for(1, "/k", timeout=60)
    assert got.event.data in (b"from-kafka", "from-kafka"), got.event
    await until_status(f"http://127.0.0.1:{env['K_METRICS_PORT']}/readyz", 200, proc, log)
    stop(proc, log)


async def test_rocketmq_adapter_waits_for_an_unreachable_proxy(install: Install, tmp_path: Path,
                                                               processes: list[subprocess.Popen[str]]) -> None:
    """Loads the gRPC client (a C extension) and runs: alive, not ready, retrying."""
    env = adapter_env("rocketmq", {"endpoints": f"127.0.0.1:{free_port()}", "topic": "t", "consumerGroup": "g",
                                   "sink": {"uri": "http://127.0.0.1:9/"}}, "http://127.0.0.1:9/")
    log = tmp_path / "rocketmq-adapter.log"
    proc = start(install, processes, ["adapter", "rocketmq"], log, env=env, tmp=False)
    metrics = f"http://127.0.0.1:{env['K_METRICS_PORT']}"
    await until_status(f"{metrics}/healthz", 200, proc, log)
    await asyncio.sleep(3)
    assert await status(f"{metrics}/readyz") == 503
    assert proc.poll() is None, read(log)
    stop(proc, log)
