"""`flowc ... | head`: a reader that goes away ends the command quietly (exit 141), no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_closed_pipe_ends_quietly() -> None:
    # the reader closes its end before flowc writes: every write fails with EPIPE
    proc = subprocess.Popen(
        [sys.executable, "-c", "from flowc.cli import main; raise SystemExit(main())", "schema"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_run_with_bm25_retrieval_prints_no_debug_lines(tmp_path: Path) -> None:
    """bm25s sets its logger to DEBUG when imported (after the CLI configured logging)."""
    (tmp_path / "w.jsonl").write_text('{"id": "1", "title": "Duo", "text": "a hip hop duo"}\n')
    spec = tmp_path / "r.flow"
    spec.write_text(
        'pipeline p {\n  input q: str\n  output docs: list[Doc] <- search.docs\n  corpus w = "w.jsonl"\n'
        "  node search: retrieve {\n    corpus: w\n    query <- q\n  }\n}\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", "from flowc.cli import main; raise SystemExit(main())", "run", str(spec), "-i", "q=duo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "hip hop" in run.stdout
    assert "DEBUG" not in run.stderr, run.stderr
