"""Fixtures of the Ray executor's tests: one local Ray instance per test module (2 CPUs, no
dashboard, its own short temp dir), shut down after the module, and a check that none of its
processes is left behind; an echo model behind the fake OpenAI server."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from _ray_cases import echo, wait_gone

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
        left = wait_gone(temp, 30.0)
        for pid in left:  # fail below, but leave nothing running either way
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left running after shutdown: {left}"


@pytest.fixture
def echo_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=echo(0.02)) as srv:
        yield srv
