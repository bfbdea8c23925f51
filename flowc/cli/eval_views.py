"""How evaluation results are shown: the summary, the per-example table (terminal, CSV, JSONL), and
the comparison of two evaluations."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flowc.errors import FlowcError
from flowc.runtime.compare import Comparison


def out_console() -> Console:
    """stdout; a log or a pipe gets a table 120 columns wide instead of rich's default 80."""
    console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(file=sys.stdout, highlight=False, width=120, no_color=True)
    return console


def short(value: Any, n: int = 60) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def print_summary(report: dict[str, Any], data: str, console: Console) -> None:
    n, errors = report["examples"], report["errors"]
    planned = report.get("planned", n)
    head = f"{report['pipeline']} on {data}: {n} examples"
    if planned != n:
        head += f" of {planned}"
    head += f", {errors} failed" if errors else ", 0 failed"
    by_code = report.get("errors_by_code") or {}
    if by_code:
        head += " (" + ", ".join(f"{code} × {n}" for code, n in by_code.items()) + ")"
    console.print(head, markup=False)
    if report.get("stopped"):
        console.print(f"stopped early: {report['stopped']}", markup=False)
    first = report.get("first_errors") or []
    if first:
        console.print("first errors:", markup=False)
        for e in first:
            console.print(f"  {e['id']}: {short(e['error'], 200)}", markup=False)
    ok = n - errors
    table = Table(box=None, pad_edge=False)
    table.add_column("metric")
    table.add_column("score" if not errors else "all (failed = 0)", justify="right")
    if errors:
        table.add_column(f"ran ok ({ok})", justify="right")
    for name, score in report["metrics"].items():
        cells = [name, f"{score:.3f}"]
        if errors:
            ok_score = report.get("metrics_ok", {}).get(name)
            cells.append("—" if ok_score is None else f"{ok_score:.3f}")
        table.add_row(*cells)
    console.print()
    console.print(table)
    retries = report.get("retries", 0)
    console.print(
        f"\nLM calls {report['lm_calls']} ({report['cached_calls']} cached"
        + (f", {retries} retried" if retries else "")
        + f"), tokens {report['tokens']}, ${report['cost_usd']:.4f}, "
        f"{report['seconds_per_example']:.2f}s per example",
        markup=False,
    )


def worst_rows(rows: list[dict[str, Any]], metric: str | None, n: int) -> list[dict[str, Any]]:
    """Failed examples first, then the lowest scores on `metric`."""

    def key(r: dict[str, Any]) -> tuple[int, float]:
        return (r["status"] == "ok", float(r.get("scores", {}).get(metric, 0.0)) if metric else 0.0)

    return sorted(rows, key=key)[:n]


def example_table(rows: Iterable[dict[str, Any]], metrics: list[str], title: str) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("id", no_wrap=True)
    table.add_column("input", max_width=40)
    table.add_column("expected", max_width=30)
    table.add_column("output", max_width=40)
    for m in metrics:
        table.add_column(m, justify="right", no_wrap=True)
    table.add_column("error", max_width=40)
    for r in rows:
        scores = [f"{r.get('scores', {}).get(m, 0.0):.2f}" for m in metrics]
        error = f"{r.get('error_code') or ''}: {short(r.get('error'), 80)}" if r["status"] != "ok" else ""
        table.add_row(
            str(r["id"]),
            short(_single(r.get("inputs"))),
            short(_single(r.get("expected"))),
            short(_single(r.get("outputs"))),
            *scores,
            error,
        )
    return table


def _single(d: Any) -> Any:
    """A one-entry mapping shown as its value (the usual case: one output, one target)."""
    if isinstance(d, dict) and len(d) == 1:
        return next(iter(d.values()))
    return d


def flat_row(r: dict[str, Any]) -> dict[str, Any]:
    """One example as flat columns: id, status, error, input.*, expected.*, output.*, score.*, usage."""
    out: dict[str, Any] = {
        "id": r["id"],
        "status": r["status"],
        "error_code": r.get("error_code"),
        "error": r.get("error"),
    }
    for prefix, key in (("input", "inputs"), ("expected", "expected"), ("output", "outputs"), ("score", "scores")):
        for k, v in (r.get(key) or {}).items():
            out[f"{prefix}.{k}"] = v
    for k in ("tokens", "lm_calls", "retries", "cost_usd", "duration_s", "run_id"):
        out[k] = r.get(k)
    return out


def export_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """The per-example table as CSV (`.csv`) or JSON lines (`.jsonl`)."""
    flat = [flat_row(r) for r in rows]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False, default=repr) + "\n" for r in flat), "utf-8")
        return
    if path.suffix != ".csv":
        raise FlowcError("invalid-value", f"--export '{path}': write .csv or .jsonl", hint="e.g. --export results.csv")
    columns = list(dict.fromkeys(k for r in flat for k in r))
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in flat:
            writer.writerow({k: _cell(v) for k, v in r.items()})


def _cell(v: Any) -> Any:
    return json.dumps(v, ensure_ascii=False, default=repr) if isinstance(v, dict | list) else v


def print_comparison(c: Comparison, console: Console) -> None:
    console.print(f"A: {c.a}{_models(c.meta_a)}\nB: {c.b}{_models(c.meta_b)}", markup=False)
    n = c.metrics[0].n if c.metrics else 0
    extra = []
    if c.only_a:
        extra.append(f"{len(c.only_a)} only in A")
    if c.only_b:
        extra.append(f"{len(c.only_b)} only in B")
    console.print(f"{n} paired examples" + (f" ({', '.join(extra)})" if extra else ""), markup=False)
    table = Table(box=None, pad_edge=False)
    for col in ("metric", "A", "B", "B − A", f"{c.metrics[0].confidence:.0%} CI" if c.metrics else "CI"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for col in ("B wins", "B loses", "ties"):
        table.add_column(col, justify="right")
    for m in c.metrics:
        table.add_row(
            m.metric,
            f"{m.mean_a:.3f}",
            f"{m.mean_b:.3f}",
            f"{m.diff:+.3f}",
            f"[{m.ci_low:+.3f}, {m.ci_high:+.3f}]" + (" *" if m.significant else ""),
            str(m.wins),
            str(m.losses),
            str(m.ties),
        )
    console.print()
    console.print(table)
    if any(m.significant for m in c.metrics):
        console.print("* the interval excludes 0 (paired bootstrap)", markup=False)
    for m in c.metrics:
        if m.changed:
            shown = ", ".join(f"{i} {a:.2f}→{b:.2f}" for i, a, b in m.changed)
            console.print(f"most changed ({m.metric}): {shown}", markup=False)


def _models(meta: dict[str, Any]) -> str:
    models = meta.get("models") or {}
    return f"  ({', '.join(f'{k}={v}' for k, v in models.items())})" if models else ""


def comparison_json(c: Comparison) -> dict[str, Any]:
    return {
        "a": str(c.a),
        "b": str(c.b),
        "only_a": c.only_a,
        "only_b": c.only_b,
        "metrics": [
            {
                "metric": m.metric,
                "n": m.n,
                "mean_a": m.mean_a,
                "mean_b": m.mean_b,
                "diff": m.diff,
                "ci": [m.ci_low, m.ci_high],
                "confidence": m.confidence,
                "wins": m.wins,
                "losses": m.losses,
                "ties": m.ties,
                "changed": [{"id": i, "a": a, "b": b} for i, a, b in m.changed],
            }
            for m in c.metrics
        ],
    }
