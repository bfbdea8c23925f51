"""`flowc test SPEC...`: run the specs' `test` blocks and check their expectations.

Exit codes: 0 every test passed (or there were none); 1 a test failed or errored, or a spec has
errors; 2 bad usage; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import sys
from pathlib import Path
from typing import Any

from flowc.cli import common


def register(sub: Any) -> None:
    p = sub.add_parser("test", help="run the specs' test blocks (exit 1 if one fails; JUnit XML for CI)")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("-k", metavar="PATTERN", help="only the tests whose name matches (glob, e.g. 'capital_*')")
    p.add_argument("--junit", metavar="FILE.xml", help="also write the results as JUnit XML")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--concurrency", "-c", type=int, default=4, help="tests of a spec run at once")
    p.add_argument("--no-cache", action="store_true")
    common.add_model_flag(p)
    p.set_defaults(func=cmd_test)


def cmd_test(args: argparse.Namespace) -> int:
    from flowc.runtime.spectests import TestResult, junit_xml

    results: list[TestResult] = []
    try:
        for spec in args.specs:
            results += _run_spec(spec, args)
    except KeyboardInterrupt:
        print(f"\ninterrupted after {len(results)} test(s); nothing is kept but the run store", file=sys.stderr)
        return 130
    if args.junit:
        Path(args.junit).write_text(junit_xml(results), encoding="utf-8")
    failed = [r for r in results if r.status != "passed"]
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2, ensure_ascii=False, default=repr))
    else:
        n_failed = sum(r.status == "failed" for r in results)
        n_errors = sum(r.status == "error" for r in results)
        parts = [f"{len(results) - len(failed)} passed"]
        if n_failed:
            parts.append(f"{n_failed} failed")
        if n_errors:
            parts.append(f"{n_errors} errors")
        print(f"\n{', '.join(parts)} in {sum(r.duration_s for r in results):.1f}s")
        if args.junit:
            print(f"junit: {args.junit}")
    return 1 if failed else 0


def _run_spec(spec: str, args: argparse.Namespace) -> list[Any]:
    from flowc.runtime.spectests import run_test

    compiled, meta = common.load(spec, args.model)
    cases = {n: c for n, c in compiled.spec.tests.items() if not args.k or fnmatch.fnmatchcase(n, args.k)}
    if not cases:
        if not args.json:
            print(f"{spec}: no tests" + (f" matching '{args.k}'" if args.k else ""))
        return []
    ex = common.executor(compiled, no_cache=args.no_cache, meta={**meta, "test": True})
    sem = asyncio.Semaphore(max(1, args.concurrency))

    async def one(name: str) -> Any:
        async with sem:
            r = await run_test(ex, spec, name, cases[name])
        if not args.json:
            _print(r)
        return r

    async def all_cases() -> list[Any]:
        return list(await asyncio.gather(*(one(n) for n in cases)))

    return asyncio.run(all_cases())


def _print(r: Any) -> None:
    mark = {"passed": "PASS", "failed": "FAIL", "error": "ERROR"}[r.status]
    print(f"{mark:<5} {r.pipeline}::{r.name} ({r.duration_s:.2f}s)")
    if r.status == "failed":
        for x in r.failures:
            print(f"      {x.describe()}: {x.reason}")
    elif r.status == "error":
        print(f"      {r.error}")
    if r.status != "passed" and r.run_id:
        print(f"      see: flowc trace {r.run_id}")
