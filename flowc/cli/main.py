"""`flowc <command> ...` — argument parsing and dispatch; each command lives in its own module.

Exit codes: 0 success; 1 the spec (or run) has errors; 2 bad usage (unknown flag, missing file).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from flowc.cli import spec_commands
from flowc.errors import FlowcError, SpecErrors
from flowc.version import __version__

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


# The commands on specs alone; for these the runtime and optimizers are not even imported, which
# keeps `flowc check` and friends fast to start.
SPEC_COMMANDS = frozenset({"check", "lint", "compile", "fmt", "graph", "schema"})


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; given `argv` naming a spec command, only that group is registered."""
    parser = argparse.ArgumentParser(prog="flowc", description="Declarative pipelines for compound AI systems.")
    parser.add_argument("--version", action="version", version=f"flowc {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    spec_commands.register(sub)
    command = next((a for a in argv or () if not a.startswith("-")), None)
    if command not in SPEC_COMMANDS:
        for module in _optional_command_modules():
            module.register(sub)
    return parser


def _optional_command_modules() -> list[Any]:
    """Command groups that live in their own modules (runtime, optimizers), when present."""
    import importlib

    found = []
    for name in (
        "flowc.cli.run_commands",
        "flowc.cli.eval_commands",
        "flowc.cli.test_commands",
        "flowc.cli.optimize_commands",
        "flowc.cli.interop_commands",
    ):
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    # The command line as given, so that an interrupted command can print the one that resumes it.
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("bm25s", "LiteLLM", "litellm", "httpx"):  # libraries that log below WARNING on their own
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.func(args)
        return code
    except SpecErrors as e:
        print(e.render(), file=sys.stderr)
        print(_summary(e), file=sys.stderr)
        return EXIT_ERRORS
    except FlowcError as e:
        print(e.diagnostic.render(), file=sys.stderr)
        return EXIT_USAGE if e.code == "file-not-found" else EXIT_ERRORS
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _summary(e: SpecErrors) -> str:
    n_err = len(e.errors)
    n_warn = len(e.diagnostics) - n_err
    return f"\n{n_err} error{'s' if n_err != 1 else ''}" + (
        f", {n_warn} warning{'s' if n_warn != 1 else ''}" if n_warn else ""
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
