"""The `flowc` command line: the composition root, imported by nothing inside flowc."""

from flowc.cli.main import main

__all__ = ["main"]
