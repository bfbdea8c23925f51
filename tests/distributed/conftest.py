"""Fixtures of the Ray executor's tests: one local Ray instance per test module (2 CPUs, no
dashboard, its own short temp dir), shut down after the module, and a check that none of its
processes is left behind; an echo model behind the fake OpenAI server."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _ray_cases import echo

from flowc.testing.fake_server import FakeOpenAIServer


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[dict[str, Any]]:
    """A local Ray instance for the whole module; every one of its processes gone afterwards."""
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="fray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    info = ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        logging_level=logging.WARNING,
        _temp_dir=temp,
    )
    try:
        yield {"ray": ray, "address": info.address_info["gcs_address"], "temp": temp}
    finally:
        ray.shutdown()
        left = _wait_gone(temp, 30.0)
        for pid in left:  # fail below, but leave nothing running either way
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left running after shutdown: {left}"


def _processes_of(temp: str) -> list[int]:
    """The processes whose command line names the instance's temp dir (raylet, GCS, workers)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            status = (d / "status").read_text()
        except OSError:
            continue
        if temp.encode() in cmd and "State:\tZ" not in status:
            found.append(int(d.name))
    return found


def _wait_gone(temp: str, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = _processes_of(temp)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


@pytest.fixture
def echo_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=echo(0.02)) as srv:
        yield srv
