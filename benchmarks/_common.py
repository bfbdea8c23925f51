"""What the benchmark scripts share: the machine description and the writing of a results file.

The scripts run as `python benchmarks/bench_x.py`, so this folder is on `sys.path` and they
import it as `from _common import machine, write_results`.
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def shared_data(*parts: str) -> Path:
    """A path under the shared data folder: `$FLOWC_SHARED_DATA`, else `../shared/data` relative to
    the checkout (the nearest folder above it that has `shared/data`, so a git worktree nested one
    level deeper finds it too)."""
    env = os.environ.get("FLOWC_SHARED_DATA")
    if env:
        return Path(env).joinpath(*parts)
    root = Path(__file__).resolve().parents[1]
    for parent in root.parents:
        if (parent / "shared" / "data").is_dir():
            return parent.joinpath("shared", "data", *parts)
    return root.parent.joinpath("shared", "data", *parts)


def machine() -> dict[str, Any]:
    """The machine the figures come from, with its 1-minute load average now (timings suffer when it is high)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "arch": platform.machine(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def package_version(package: str) -> str | None:
    """The installed version of `package`, or None where it is not installed."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def write_results(path: Path | str, payload: dict[str, Any]) -> None:
    """Write `payload` as indented UTF-8 JSON to `path` and say so.

    Adds `machine()` under "machine" unless the payload has one, and the time of this write
    (UTC) under "when"; creates the parent folder. Values JSON cannot hold are written as str.
    """
    path = Path(path)
    data = dict(payload)
    data.setdefault("machine", machine())
    data["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    print(f"wrote {path}")
