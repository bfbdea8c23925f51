"""Bindings and loop conditions, read by the `.flow` grammar's `binding` and `cond` rules.

The spec layer holds the syntax tree (flowc/spec/exprs.py) and validates every binding and
condition through the reader registered here, whichever front end the text came from: a YAML
`source: plan.query ?? question` and a `.flow` `query <- plan.query ?? question` are read by the
same rules of flowc/grammars/flow.lark.
"""

from __future__ import annotations

import json

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from flowc.source import describe_char
from flowc.spec import exprs as ast
from flowc.syntax.parser import grammar

#: The tokens that can start an operand, for "expected a name, ..., found X".
_OPERAND_START = {"NAME", "STRING", "SIGNED_NUMBER", "CONST", "ALL"}


def read_expression(text: str, rule: str) -> ast.Expr:
    """`text` read by grammar rule `rule` ("binding" or "cond"); raises ExprSyntaxError."""
    if not text.strip():
        what = "empty binding: write a name, a node output or a literal" if rule == "binding" else "empty condition"
        raise ast.ExprSyntaxError(what, 0)
    try:
        tree = grammar().parse(text, start=rule)
    except UnexpectedInput as e:
        raise _syntax_error(e, text) from None
    return _cond(tree) if rule == "cond" else _binding(tree)


def _syntax_error(e: UnexpectedInput, text: str) -> ast.ExprSyntaxError:
    if isinstance(e, UnexpectedCharacters):
        pos = e.pos_in_stream or 0
        ch = text[pos] if pos < len(text) else ""
        if ch == '"':
            return ast.ExprSyntaxError("unterminated string in expression", pos)
        return ast.ExprSyntaxError(f"unexpected character {describe_char(ch)} in expression", pos)
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        return ast.ExprSyntaxError("expression ends early", len(text.rstrip()))
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    pos = tok.start_pos or 0
    if tok.type == "_NL":
        return ast.ExprSyntaxError("an expression is written on one line", pos)
    if set(e.expected) & _OPERAND_START and not set(e.expected) - _OPERAND_START - {"LPAR", "NOT"}:
        return ast.ExprSyntaxError(f"expected a name, a node output or a literal, found {str(tok)!r}", pos)
    return ast.ExprSyntaxError(f"unexpected {str(tok)!r}", pos)


def _pos(node: Tree | Token) -> int:
    if isinstance(node, Token):
        return node.start_pos or 0
    return node.meta.start_pos if not node.meta.empty else 0


def _cond(tree: Tree) -> ast.Expr:
    items = [_conj(c) for c in tree.children]
    return items[0] if len(items) == 1 else ast.BoolOp(items[0].offset, "or", tuple(items))


def _conj(tree: Tree) -> ast.Expr:
    items = [_neg(c) for c in tree.children]
    return items[0] if len(items) == 1 else ast.BoolOp(items[0].offset, "and", tuple(items))


def _neg(tree: Tree) -> ast.Expr:
    if tree.data == "negation":
        return ast.Not(_pos(tree), _neg(tree.children[0]))
    first = tree.children[0]
    if isinstance(first, Tree) and first.data == "cond":  # "(" cond ")"
        return _cond(first)
    left = _binding(first)
    if len(tree.children) == 1:
        return left
    _, op, right = tree.children
    return ast.Compare(left.offset, left, str(op), _binding(right))


def _binding(tree: Tree) -> ast.Expr:
    options = [_operand(c) for c in tree.children]
    return options[0] if len(options) == 1 else ast.Coalesce(options[0].offset, tuple(options))


def _operand(tree: Tree) -> ast.Expr:
    if tree.data == "history":
        ref = _ref(tree.children[0])
        if ref.node is None:
            raise ast.ExprSyntaxError("'all' takes a node output, as in 'all reflect.evidence'", ref.offset)
        return ast.History(_pos(tree), ref)
    if tree.data == "literal":
        tok = tree.children[0]
        assert isinstance(tok, Token)
        return ast.Lit(_pos(tok), _literal(tok))
    return _ref(tree.children[0])


def _ref(tree: Tree) -> ast.Ref:
    names = [str(t) for t in tree.children]
    if len(names) == 1:
        return ast.Ref(_pos(tree), None, names[0])
    return ast.Ref(_pos(tree), names[0], names[1])


def _literal(tok: Token) -> object:
    s = str(tok)
    if tok.type == "CONST":
        return {"true": True, "false": False, "null": None}[s]
    if tok.type == "SIGNED_NUMBER":
        return float(s) if any(c in s for c in ".eE") else int(s)
    try:
        return json.loads(s)
    except json.JSONDecodeError as e:
        raise ast.ExprSyntaxError(f"bad string literal: {e.msg}", (tok.start_pos or 0) + e.pos) from None


ast.register_reader(read_expression)
