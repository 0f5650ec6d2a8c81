"""The README's main job: ``eventferry run`` on the live-stream example, events sent with ``eventferry send``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.env.ports import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTFERRY = str(Path(sys.executable).parent / "eventferry")


def wait_ready(port: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"eventferry run exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("eventferry run did not become ready")


def test_run_the_live_stream_example_and_send_events(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "run.out"
    with out.open("w") as sink:
        proc = subprocess.Popen([EVENTFERRY, "run", "-f", str(ROOT / "examples" / "live-stream"), "--display",
                                 "--port", str(port)], stdout=sink, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    try:
        wait_ready(port, proc)
        url = f"http://127.0.0.1:{port}/live/live-stream"
        sent = subprocess.run([EVENTFERRY, "send", url, "--type", "com.live.comment", "--source", "/rooms/42",
                               "--id", "c-1", "--data", '{"text": "hello"}'], capture_output=True, text=True,
                              timeout=30)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.startswith("202 Accepted id=c-1")
        frames = subprocess.run([EVENTFERRY, "send", url, "--type", "com.live.video.frame", "--source", "/rooms/42",
                                 "--ext", "keyframe=true", "--ext", "priority=3", "--count", "3", "--id", "f"],
                                capture_output=True, text=True, timeout=30)
        assert frames.returncode == 0, frames.stdout
        bad = subprocess.run([EVENTFERRY, "send", url.replace("live-stream", "nope"), "--type", "t", "--source", "s"],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode == 1 and bad.stdout.startswith("404")
        deadline = time.monotonic() + 10
        while "[live/moderation/comments] com.live.comment id=c-1" not in out.read_text():
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        time.sleep(0.5)
        assert "com.live.video.frame" not in out.read_text()  # priority 3 < 5: the CESQL filter keeps it out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=20)
    assert code == 0
    text = out.read_text()
    assert f"Broker live/live-stream (InMemory): http://127.0.0.1:{port}/live/live-stream (4 trigger(s))" in text


def test_run_refuses_an_invalid_manifest_with_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: eventferry.dev/v1alpha1\nkind: Trigger\nmetadata: {name: t}\n"
                   "spec: {broker: b, filter: {attributes: {Bad-Key: x}}, subscriber: {uri: 'http://x.test'}}\n")
    done = subprocess.run([EVENTFERRY, "run", "-f", str(bad), "--port", str(free_port())], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert str(bad) in done.stderr and "Bad-Key" in done.stderr
