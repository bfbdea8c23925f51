"""Fixtures of the CLI tests of run/eval/test (their fakes are in cli_fakes.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_fakes import Clients

import flowc.runtime.session as session


@pytest.fixture
def flowc_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """FLOWC_HOME in tmp_path, no model overrides from the environment, cwd = tmp_path."""
    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    for k in [k for k in os.environ if k.startswith("FLOWC_MODEL")]:
        monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


@pytest.fixture
def rule_clients(monkeypatch: pytest.MonkeyPatch) -> Clients:
    """`session.default_client` answering with a RuleLM per command."""
    c = Clients()
    monkeypatch.setattr(session, "default_client", c)
    return c
