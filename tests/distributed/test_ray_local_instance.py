"""`flowc eval --executor ray` without `--address`: the command starts a local Ray instance of its
own and leaves no Ray process behind — when it finishes, and when it is killed with -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ray_cases import echo, records, spec_text, wait_gone

from flowc.runtime import evaldir
from flowc.testing.fake_server import FakeOpenAIServer

pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(600)

CLI = "import sys; from flowc.cli.main import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    """RAY_TMPDIR for the command: every process of its Ray instance names it on its command line."""
    temp = tempfile.mkdtemp(prefix="frl", dir="/tmp")
    yield temp
    for pid in wait_gone(temp, 0):
        os.kill(pid, signal.SIGKILL)


def _command(tmp_path: Path, ray_tmp: str, *extra: str) -> subprocess.Popen[bytes]:
    argv = ["eval", "qa.flow", "--data", "d.jsonl", "--out", "ev", "--no-cache", "--executor", "ray", *extra]
    env = {**os.environ, "FLOWC_HOME": str(tmp_path / "home"), "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-c", CLI, *argv, "--workers", "1", "-c", "4"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_the_local_instance_goes_with_the_command_killed_or_not(tmp_path: Path, ray_tmp: str) -> None:
    n = 40
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records(n)), encoding="utf-8")
    out = tmp_path / "ev"
    with FakeOpenAIServer(default=echo(0.3)) as srv:
        (tmp_path / "qa.flow").write_text(spec_text(srv.base_url), encoding="utf-8")
        proc = _command(tmp_path, ray_tmp)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None and len(evaldir.read_rows(out)) < 2:
                time.sleep(0.1)
            assert proc.poll() is None and len(evaldir.read_rows(out)) >= 2
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert wait_gone(ray_tmp, 60.0) == []  # killed with -9: its Ray processes went with it
        done = len(evaldir.read_rows(out))
        resumed = _command(tmp_path, ray_tmp, "--resume")
        _, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err.decode()
    assert "ray: 1 worker(s) × 4 example(s) each (a local Ray instance)" in err.decode()
    assert done < n and len(evaldir.read_rows(out)) == n
    assert wait_gone(ray_tmp, 30.0) == []  # finished: its Ray instance stopped with it
