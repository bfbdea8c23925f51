"""Reading what a user gives a run: dataset files, input files, command-line values.

Every failure names its place: a dataset line that is not JSON names the line; bytes that are not
UTF-8 name the file, the byte offset and the line (or the input, for a command-line value); a value
over the size limit names the line or the input and the limit. The limit (`max_input_bytes`,
default 1,000,000 bytes, `FLOWC_MAX_INPUT_BYTES` or `--max-input-bytes`) stops a runaway line
from being sent whole to a model; the model's own context window is checked again before each
call (limits.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flowc.errors import FlowcError

DEFAULT_MAX_INPUT_BYTES = 1_000_000
_ENV_LIMIT = "FLOWC_MAX_INPUT_BYTES"


def max_input_bytes(override: int | None = None) -> int:
    """The input size limit: `override`, else $FLOWC_MAX_INPUT_BYTES, else 1,000,000 (0 = none)."""
    if override is not None:
        return override
    raw = os.environ.get(_ENV_LIMIT)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_INPUT_BYTES
    try:
        value = int(raw.replace("_", "").replace(",", ""))
    except ValueError:
        raise FlowcError(
            "invalid-value",
            f"${_ENV_LIMIT} is '{raw}', not a number of bytes",
            hint=f"set it to a whole number, e.g. {_ENV_LIMIT}=5000000 (0 for no limit)",
        ) from None
    if value < 0:
        raise FlowcError("invalid-value", f"${_ENV_LIMIT} is negative ({value})", hint="use 0 for no limit")
    return value


def read_utf8(path: Path, what: str) -> str:
    """The text of `path`; bytes that are not UTF-8 are an error naming the byte offset and line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise FlowcError(
            "invalid-encoding",
            f"{path}: {what} is not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} "
            f"(line {line}) {e.reason}",
            hint="save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or fix that line",
        ) from None


def load_dataset(path: str | Path, limit: int | None = None, *, max_bytes: int | None = None) -> list[dict[str, Any]]:
    """Records from a JSONL file (or a JSON list); each gets an `id` if it has none.

    Raises:
        FlowcError: dataset-invalid (no file, not JSON, not objects), invalid-encoding (not
            UTF-8), input-too-large (a line or record over the limit).
    """
    p = Path(path)
    if not p.is_file():
        raise FlowcError("dataset-invalid", f"no dataset file at '{path}'", hint="pass a .jsonl file with --data")
    limit_bytes = max_input_bytes(max_bytes)
    text = read_utf8(p, "the dataset")
    records: list[dict[str, Any]] = []
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise FlowcError("dataset-invalid", f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        records = [r for r in data if isinstance(r, dict)]
        for i, rec in enumerate(records):
            _check_size(len(json.dumps(rec, ensure_ascii=False).encode("utf-8")), limit_bytes, f"{path}: record {i}")
    else:
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            _check_size(len(line.encode("utf-8")), limit_bytes, f"{path}:{i}")
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise FlowcError(
                    "dataset-invalid", f"{path}:{i}: not valid JSON ({e.msg})", hint="one JSON object per line"
                ) from None
            if not isinstance(rec, dict):
                raise FlowcError("dataset-invalid", f"{path}:{i}: expected a JSON object per line")
            records.append(rec)
    for i, r in enumerate(records):
        r.setdefault("id", str(i))
    return records[:limit] if limit else records


def _check_size(size: int, limit: int, where: str) -> None:
    if limit and size > limit:
        raise FlowcError(
            "input-too-large",
            f"{where}: {size:,} bytes; the input limit is {limit:,}",
            hint=f"shorten it, or raise the limit with --max-input-bytes or ${_ENV_LIMIT} (0 for none)",
        )


def parse_column_map(pairs: Iterable[str], inputs: Iterable[str]) -> dict[str, str]:
    """`--map INPUT=COLUMN` pairs: pipeline input name -> dataset column."""
    names = list(inputs)
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, column = pair.partition("=")
        key, column = key.strip(), column.strip()
        if not sep or not key or not column:
            raise FlowcError(
                "invalid-value",
                f"--map '{pair}' is not INPUT=COLUMN",
                hint="e.g. --map question=q reads input 'question' from the dataset's 'q' field",
            )
        if key not in names:
            raise FlowcError(
                "missing-pipeline-input",
                f"--map '{pair}': '{key}' is not an input of the pipeline",
                hint=f"inputs: {', '.join(names) or 'none'}",
            )
        out[key] = column
    return out


def map_columns(records: list[dict[str, Any]], mapping: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each record with the mapped columns copied under their input names (the record's own
    fields stay, so targets and ids still read). A column no record has is an error."""
    if not mapping:
        return records
    fields = {k for r in records for k in r}
    for key, column in mapping.items():
        if records and column not in fields:
            raise FlowcError(
                "dataset-invalid",
                f"--map {key}={column}: no record has a field '{column}'",
                hint=f"fields: {', '.join(sorted(fields))}",
            )
    return [{**r, **{key: r[col] for key, col in mapping.items() if col in r}} for r in records]


def inputs_of(record: Mapping[str, Any], input_names: Iterable[str]) -> dict[str, Any]:
    """The pipeline inputs a dataset record holds."""
    return {k: record[k] for k in input_names if k in record}


def check_inputs(inputs: Mapping[str, Any], *, limit: int, source: str = "input") -> None:
    """Refuse input values over `limit` bytes, or holding text that was not UTF-8 (a command-line
    value with bytes that are not UTF-8 reaches Python as lone surrogates)."""
    for name, value in inputs.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as e:
            raw = text.encode("utf-8", "surrogateescape")
            offset = len(text[: e.start].encode("utf-8", "surrogateescape"))
            raise FlowcError(
                "invalid-encoding",
                f"{source} '{name}' is not UTF-8 text: byte 0x{raw[offset]:02x} at offset {offset}",
                hint="pass the value as UTF-8 (check the terminal's or the script's encoding)",
            ) from None
        _check_size(size, limit, f"{source} '{name}'")
