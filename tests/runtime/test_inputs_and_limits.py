"""What a run refuses before it spends anything: text that is not UTF-8 (a dataset, an input file,
a command-line value), inputs over the size limit, a prompt that cannot fit the model's context."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_fakes import SPEC, Clients, cli, write_data

from flowc.errors import FlowcError, LMError
from flowc.runtime.datasets import check_inputs, load_dataset, max_input_bytes
from flowc.runtime.fakes import ScriptedLM
from flowc.runtime.limits import ContextGuard, default_window
from flowc.runtime.lm import LMRequest, chat
from flowc.runtime.store import RunStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    p = tmp_path / "qa.flow"
    p.write_text(SPEC)
    return p


def test_dataset_not_utf8_names_file_offset_and_line(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"question": "ok"}\n{"question": "caf\xe9"}\n')
    with pytest.raises(FlowcError) as e:
        load_dataset(p)
    assert e.value.code == "invalid-encoding"
    assert f"{p}: the dataset is not UTF-8 text: byte 0xe9 at offset 36 (line 2)" in str(e.value)


def test_input_file_not_utf8_is_a_clear_cli_error(
    flowc_home: Path, rule_clients: Clients, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "in.json"
    f.write_bytes(b'{"question": "\xff"}')
    code, _, err = cli(capsys, "run", str(spec), "--input-file", str(f))
    assert code == 1 and "invalid-encoding" in err and "byte 0xff at offset 14 (line 1)" in err
    assert "Traceback" not in err and not rule_clients.calls


def test_argv_value_not_utf8_names_the_input(flowc_home: Path, spec: Path, tmp_path: Path) -> None:
    # A real process, so the bytes reach Python the way a terminal passes them (surrogateescape).
    env = {**os.environ, "FLOWC_HOME": str(tmp_path / "home"), "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from flowc.cli import main; sys.exit(main())",
            "run",
            str(spec),
            "-i",
            b"question=caf\xe9".decode("utf-8", "surrogateescape"),
        ],
        capture_output=True,
        env=env,
        timeout=60,
    )
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, err
    assert "error[invalid-encoding]: --input 'question' is not UTF-8 text: byte 0xe9 at offset 3" in err
    assert "Traceback" not in err


def test_the_store_keeps_a_value_that_is_not_utf8(tmp_path: Path) -> None:
    # the library path (no CLI check): the run store escapes it instead of crashing in begin_run
    import flowc
    from flowc.runtime.executor import Executor

    ex = Executor(flowc.compile(SPEC), lm=ScriptedLM(["fine"]), store=RunStore(tmp_path / "runs.sqlite"))
    result = asyncio.run(ex.run({"question": "caf\udce9"}))
    assert result.status == "ok"
    assert RunStore(tmp_path / "runs.sqlite").load(result.run_id).inputs == {"question": "caf\udce9"}


def test_size_limit_for_dataset_lines_and_inputs(
    flowc_home: Path,
    rule_clients: Clients,
    spec: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = write_data(
        tmp_path / "d.jsonl", [{"question": "short", "answer": "x"}, {"question": "x" * 5000, "answer": "y"}]
    )
    with pytest.raises(FlowcError) as e:
        load_dataset(data, max_bytes=1000)
    assert e.value.code == "input-too-large" and f"{data}:2: 5," in str(e.value) and "limit is 1,000" in str(e.value)
    assert len(load_dataset(data, max_bytes=0)) == 2  # 0: no limit
    code, _, err = cli(capsys, "eval", str(spec), "--data", str(data), "--max-input-bytes", "1000")
    assert code == 1 and "input-too-large" in err and not rule_clients.calls
    monkeypatch.setenv("FLOWC_MAX_INPUT_BYTES", "100")
    assert max_input_bytes() == 100
    code, _, err = cli(capsys, "run", str(spec), "-i", "question=" + "y" * 101)
    assert code == 1 and "--input 'question': 101 bytes; the input limit is 100" in err
    monkeypatch.setenv("FLOWC_MAX_INPUT_BYTES", "lots")
    with pytest.raises(FlowcError, match="not a number of bytes"):
        max_input_bytes()
    with pytest.raises(FlowcError, match="input 'doc' is not UTF-8"):
        check_inputs({"doc": "a\udcffb"}, limit=0)


async def test_context_guard_refuses_what_cannot_fit_and_sends_the_rest() -> None:
    inner = ScriptedLM(["fits"])
    guard = ContextGuard(inner)
    assert default_window("local/smollm2") == 2048 and default_window("local/nope") is None
    big = LMRequest(model="local/smollm2", messages=chat(None, "word " * 20_000), max_tokens=64, node="answer")
    with pytest.raises(LMError) as e:
        await guard.complete(big)
    assert e.value.code == "context-window-exceeded" and "context window is 2,048 tokens" in str(e.value)
    assert "node 'answer'" in str(e.value) and inner.calls == []  # refused before sending
    near = LMRequest(model="local/smollm2", messages=chat(None, "word " * 2000), max_tokens=64)
    assert (await guard.complete(near)).text == "fits"  # ~2,000+ tokens by 4 chars/token: the model decides
    unknown = ContextGuard(ScriptedLM(["ok"]), window_of=lambda m: None)
    assert (await unknown.complete(big.model_copy(update={"model": "openai/custom"}))).text == "ok"


def test_an_oversized_prompt_fails_its_example_with_the_code(
    flowc_home: Path, rule_clients: Clients, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "local.flow"
    spec.write_text(SPEC.replace('"openai/fake"', '"local/smollm2"'))
    data = write_data(
        tmp_path / "d.jsonl", [{"question": "word " * 20_000, "answer": "x"}, {"question": "hi", "answer": "HI"}]
    )
    code, out, _ = cli(capsys, "eval", str(spec), "--data", str(data), "--json")
    report = json.loads(out)
    assert code == 1 and report["errors_by_code"] == {"context-window-exceeded": 1}
    assert [c.messages[-1].content for c in rule_clients.calls] == ["Q: hi"]
