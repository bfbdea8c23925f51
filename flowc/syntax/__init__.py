"""The `.flow` front end (lark): the grammar, the parser, the printer, and the reader of bindings
and conditions that the spec layer uses for both front ends (registered on import)."""

from flowc.syntax import exprs as _exprs  # noqa: F401  (registers the expression reader)
