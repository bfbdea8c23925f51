"""The fault suite at full size: 1,000 examples against a fake server failing 20 % of requests
(429, 500, timeouts, malformed and cut-off bodies, closed connections; seeded), the evaluation
killed with SIGKILL at a seeded point and resumed. Prints examples finished, retried, failed, lost
and duplicated (the last two must be 0) and writes them to benchmarks/results/faults.json.

    python benchmarks/bench_faults.py [--examples 1000] [--rate 0.2] [--seed 7] [-c 8]

Runs in about a minute on 2 cores; nothing leaves 127.0.0.1. The work folder (spec, data, the
evaluation folder, the run store) is kept under --work for inspection.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _common import write_results

from flowc.testing.fault_suite import FaultSuite, run_fault_suite


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--rate", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--concurrency", "-c", type=int, default=8)
    p.add_argument("--kinds", default=FaultSuite.kinds, help="comma-separated fault kinds (default: all six)")
    p.add_argument("--work", help="work folder (default: a fresh temporary one)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "faults.json"))
    args = p.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="flowc-faults-"))
    if work.exists() and any(work.iterdir()):
        shutil.rmtree(work)
    suite = FaultSuite(
        examples=args.examples, rate=args.rate, seed=args.seed, concurrency=args.concurrency, kinds=args.kinds
    )
    report = run_fault_suite(suite, work)
    print(f"work folder: {work}")
    print(f"server: {report['server']}")
    print(
        f"killed after {report['done_at_kill']} of {report['examples']} examples "
        f"({report['seconds_first']}s), resumed in {report['seconds_resume']}s (exit {report['resume_exit_code']})"
    )
    for key in ("finished", "retried", "failed", "lost", "duplicated", "runs_left_running"):
        print(f"{key:<18} {report[key]}")
    if report["failed_by_code"]:
        print(f"failed by code     {report['failed_by_code']}")
    write_results(args.out, report)
    bad = report["lost"] or report["duplicated"] or report["runs_left_running"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
