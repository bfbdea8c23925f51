"""The canonical spec: pydantic v2 models that the DSL, YAML/JSON and Python all build.

Nothing downstream ever sees a lark tree or a raw dict. Source positions are not part of the
models' data (they never appear in dumps); each Pipeline carries a table from the path of a
value (`("nodes", "search", "inputs", "query")`) to its Span, filled in by the front end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_serializer,
)
from pydantic_core import PydanticCustomError

from flowc.source import Span, value_column
from flowc.spec.endpoints import CREDENTIAL_HINT, credential_problem
from flowc.spec.exprs import Expr, ExprSyntaxError, Lit, parse_binding, parse_condition
from flowc.spec.types import TypeExpr, TypeSyntaxError, parse_type

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
RESERVED = frozenset({"all", "and", "or", "not", "contains", "true", "false", "null", "item", "input", "output"})


def _type(v: Any) -> TypeExpr:
    if isinstance(v, TypeExpr):
        return v
    if not isinstance(v, str):
        raise PydanticCustomError("invalid-type-expr", "a type is written as text, like 'list[str]'")
    try:
        return parse_type(v)
    except TypeSyntaxError as e:
        raise PydanticCustomError("invalid-type-expr", "{msg}", {"msg": str(e), "offset": e.offset}) from None


def _binding(v: Any) -> Expr:
    if isinstance(v, Expr):
        return v
    if isinstance(v, bool | int | float) or v is None:
        return Lit(0, v)
    if not isinstance(v, str):
        raise PydanticCustomError("invalid-binding", "a binding is written as text, like 'plan.query'")
    try:
        return parse_binding(v)
    except ExprSyntaxError as e:
        raise PydanticCustomError("invalid-binding", "{msg}", {"msg": str(e), "offset": e.offset}) from None


def _condition(v: Any) -> Expr:
    if isinstance(v, Expr):
        return v
    if not isinstance(v, str):
        raise PydanticCustomError("invalid-binding", "a condition is written as text")
    try:
        return parse_condition(v)
    except ExprSyntaxError as e:
        raise PydanticCustomError("invalid-binding", "{msg}", {"msg": str(e), "offset": e.offset}) from None


TypeRef = Annotated[
    TypeExpr,
    BeforeValidator(_type),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "description": "a type, e.g. str, list[Doc], enum[a, b], {x: int}"}),
]
Binding = Annotated[
    Expr,
    BeforeValidator(_binding),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "description": "a binding: name, node.port, literal, 'all n.p', 'a ?? b'"}),
]
Condition = Annotated[
    Expr,
    BeforeValidator(_condition),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "description": 'a condition, e.g. plan.next == "search"'}),
]
JSONValue = Annotated[Any, WithJsonSchema({})]


class SpecModel(BaseModel):
    # a field's docstring is its description in the JSON Schema (flowc/spec/schema.py): editors show it
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


# -- declarations ------------------------------------------------------------------------------


class InputDecl(SpecModel):
    type: TypeRef
    """The input's type: str, int, float, bool, any, Doc, list[T], enum[a, b], {field: T}, T? or a declared type."""
    default: JSONValue = None
    """The value used when a run does not give this input; without one the input is required."""
    description: str = ""
    """What the input is, for readers and tools."""


class OutputDecl(SpecModel):
    source: Binding
    """Where the output's value comes from: node.port, an input name, a literal, 'all node.port' or 'a ?? b'."""
    type: TypeRef | None = None
    """The output's type, checked against its source; none: the source's type."""
    description: str = ""
    """What the output is, for readers and tools."""


class ModelDecl(SpecModel):
    """A model reachable through litellm (`openai/gpt-4o-mini`, `local/smollm2`, ...)."""

    id: str = Field(min_length=1)
    """The model's id as litellm knows it (openai/gpt-4o-mini, ollama/llama3), or an embedded model
    (local/smollm2, local/qwen-coder-0.5b)."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Sampling temperature, 0 to 2."""
    max_tokens: int | None = Field(None, ge=1)
    """The most tokens per answer; none: the provider's default."""
    seed: int | None = None
    """Sampling seed, where the provider supports one."""
    retries: int = Field(2, ge=0, le=20)
    """Retries of a failed call (timeouts, rate limits, server errors), with exponential backoff."""
    timeout: float | None = Field(60.0, gt=0)
    """Seconds per call; null for none."""
    rpm: int | None = Field(None, ge=1)
    """Requests per minute, shared by every node and optimizer that uses this model."""
    tpm: int | None = Field(None, ge=1)
    """Tokens per minute, shared by every node and optimizer that uses this model."""
    fallbacks: list[str] = Field(default_factory=list)
    """Model ids tried in order when this one still fails after its retries."""
    api_base: str | None = None
    """The server's base URL (vLLM, Ollama, llama.cpp or any OpenAI-compatible server)."""
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The environment variable holding the key for api_base; without it a custom api_base gets no key
    (a provider's key from the environment goes only to that provider's own endpoints)."""
    transport: Literal["auto", "native", "litellm"] = "auto"
    """How calls go: native (flowc's HTTP client, OpenAI-compatible servers), litellm, or auto."""
    constrained: bool | None = None
    """Constrained decoding of typed replies. None: where the model supports it (a grammar for the
    embedded local/ models, a JSON schema for APIs with structured outputs); true also sends a grammar
    to a llama.cpp server behind api_base; false never."""
    # Weights: a LoRA adapter (safetensors) trained by flowc, and whether optimizers may train it.
    adapter: str | None = None
    """A LoRA adapter (safetensors) for the model's weights, relative to the spec; it must lie inside the project."""
    trainable: bool = False
    """Whether optimizers may train the model's weights (a 'weights' param)."""

    @field_validator("api_base")
    @classmethod
    def _no_credential_in_url(cls, v: str | None) -> str | None:
        problem = credential_problem(v) if v is not None else None
        if problem:
            # The spec's text goes into artifacts, lockfiles and traces: a key in it would too.
            raise PydanticCustomError("invalid-value", "{msg}", {"msg": f"{problem}", "hint": CREDENTIAL_HINT})
        return v


class CorpusDecl(SpecModel):
    path: str = Field(min_length=1)
    """The corpus file (.jsonl of {id, title, text} records), relative to the spec; it must lie inside the project."""
    description: str = ""
    """What the corpus holds, for readers and tools."""


class LoopDecl(SpecModel):
    """A bounded back edge: values from `from` may re-run `to` at most `max` times."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)
    from_: Name = Field(alias="from")
    """The node whose values (or route choice) go back to 'to'."""
    to: Name
    """The node the loop goes back to."""
    max: int = Field(ge=1, le=1000)
    """The most times the back edge is taken in one run."""
    while_: Condition | None = Field(default=None, alias="while")
    """The back edge is taken only while this holds, e.g. plan.next == "search"."""


class MetricDecl(SpecModel):
    fn: Name
    """The metric: exact_match, f1, accuracy, contains, last_integer, label_accuracy, mrr or llm_judge."""
    output: Name
    """The pipeline output it scores."""
    target: Name
    """The dataset field holding the expected value."""
    model: Name | None = None
    """The judge of an llm_judge metric: a declared model (no other metric takes one)."""


class Expectation(SpecModel):
    output: Name
    """The pipeline output tested."""
    op: Literal["==", "!=", "contains", "matches"] = "=="
    """How the output is compared with the value: ==, !=, contains, or matches (a regular expression)."""
    value: JSONValue = None
    """The value compared with; it must fit the output's type."""


class TestCase(SpecModel):
    inputs: dict[Name, JSONValue] = Field(default_factory=dict)
    """The pipeline inputs of this test, by name."""
    expect: list[Expectation] = Field(default_factory=list)
    """What the outputs must satisfy."""


# -- nodes ---------------------------------------------------------------------------------------


class NodeBase(SpecModel):
    description: str = ""
    """What the node does, for readers and tools."""
    inputs: dict[Name, Binding] = Field(default_factory=dict)
    """The node's input ports and what is bound to each: node.port, an input name, a literal,
    'all node.port' or 'a ?? b'."""

    @model_serializer(mode="wrap")
    def _keep_kind(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # `kind` is the discriminator: keep it even when dumping without defaults.
        data: dict[str, Any] = handler(self)
        out = {"kind": getattr(self, "kind")}  # noqa: B009
        inputs = data.pop("inputs", None)
        for k, v in data.items():
            if k == "outputs" and inputs is not None:
                out["inputs"] = inputs
                inputs = None
            out[k] = v
        if inputs is not None:
            out["inputs"] = inputs
        return out


class LLMNode(NodeBase):
    """Renders `prompt` from its inputs, calls `model`, parses typed `outputs`.

    An output of type `route[a, b]` makes the node a router: its value picks the next node,
    and `fallback` is taken when the model answers outside the choices or a loop is exhausted.
    """

    kind: Literal["llm"] = "llm"
    """An llm node renders its prompt from its inputs, calls a model and parses typed outputs."""
    role: str = ""
    """What the node does (generator, planner, critic, ...); optimizers use it."""
    model: Name | None = None
    """The name of a model declared under 'models' (not a model id); none: the only declared model."""
    system: str | None = None
    """The system message, a template over the node's inputs."""
    prompt: str
    """The user message, a template: {{input}} and {{input.field}} placeholders over the node's inputs."""
    outputs: dict[Name, TypeRef] = Field(default_factory=dict)
    """Typed outputs by name; none: one output 'text: str'. A route[a, b] output makes the node a router."""
    format: Literal["auto", "json", "tagged", "text"] = "auto"
    """How outputs are asked for and parsed: json, tagged (<name>...</name>), text, or auto."""
    demos: list[dict[Name, JSONValue]] = Field(default_factory=list)
    """Examples shown to the model: records of input and output values."""
    trainable: bool = True
    """Whether optimizers may change its prompt, system prompt and demos."""
    fallback: Name | None = None
    """For a router: the node taken when the answer is not a choice or a loop is exhausted."""
    # Task-specific criteria a local critic scores this node's output on (TEP); defaults apply if empty.
    criteria: list[str] = Field(default_factory=list)
    """What a local critic scores the output on (TEP); empty: the defaults."""


class RetrieveNode(NodeBase):
    """Top-k passages from a declared corpus. Input `query: str` (or `queries: list[str]` for maxsim);
    outputs `docs` and the query (or queries) it searched, under the input's name.

    `skip_seen` leaves out the passages this node already returned earlier in the run, so each
    search of a loop brings new passages (the top k among those not seen yet).

    `filter_subqueries` (maxsim) applies POQD's hallucination filter: each sub-query keeps only the
    words of the original query, bound as `query` next to `queries`.
    """

    kind: Literal["retrieve"] = "retrieve"
    """A retrieve node returns the top-k passages of a corpus for its 'query' (or 'queries')."""
    corpus: Name
    """The name of a corpus declared under 'corpora' (not a path)."""
    method: Literal["bm25", "dense", "maxsim"] = "bm25"
    """bm25 (lexical), dense (embeddings) or maxsim (several queries, late interaction)."""
    k: int = Field(5, ge=1, le=1000)
    """How many passages to return."""
    skip_seen: bool = False
    """Leave out the passages this node already returned earlier in the run (each search of a loop brings new ones)."""
    filter_subqueries: bool = False
    """With method maxsim: POQD's hallucination filter (sub-queries keep only the words of the original query)."""


class ToolNode(NodeBase):
    """Calls a Python function registered under `function` (entry points or the Python API)."""

    kind: Literal["tool"] = "tool"
    """A tool node calls a registered Python function with its inputs."""
    function: Name
    """The registered name of the function (entry points or the Python API)."""
    outputs: dict[Name, TypeRef] = Field(default_factory=dict)
    """Typed outputs by name; none: one output 'result: any'."""


class SubflowNode(NodeBase):
    """Another pipeline used as a node; `flow` names an `import`."""

    kind: Literal["subflow"] = "subflow"
    """A subflow node runs an imported pipeline; its inputs and outputs are that pipeline's."""
    flow: Name
    """The alias of an import (import "file.flow" as alias)."""


class MapNode(NodeBase):
    """Runs `body` once per element of `over` (bound to the name `item`), concurrently; gathers lists."""

    kind: Literal["map"] = "map"
    """A map node runs its body once per element of 'over', concurrently, and gathers the outputs as lists."""
    over: Binding
    """The list to map over: a binding such as decompose.subqueries."""
    item: Name = "item"
    """The name the body's bindings use for the current element."""
    max_items: int | None = Field(None, ge=1)
    """The most elements mapped; the rest are dropped."""
    body: Annotated[LLMNode | RetrieveNode | ToolNode | SubflowNode, Field(discriminator="kind")]
    """The node run for each element (llm, retrieve, tool or subflow)."""


Node = Annotated[LLMNode | RetrieveNode | ToolNode | SubflowNode | MapNode, Field(discriminator="kind")]
NODE_KINDS = ("llm", "retrieve", "tool", "subflow", "map")

#: The metrics a spec may name (implemented in flowc.runtime.metrics; a test keeps the two equal).
METRIC_NAMES = (
    "exact_match",
    "f1",
    "accuracy",
    "contains",
    "last_integer",
    "label_accuracy",
    "mrr",
    "llm_judge",
)


# -- the pipeline -------------------------------------------------------------------------------


class Pipeline(SpecModel):
    """One pipeline: its interface, what it uses, its nodes and how they connect."""

    pipeline: Name
    """The pipeline's name."""
    description: str = ""
    """What the pipeline does."""
    optimize: dict[str, dict[Name, JSONValue]] = Field(default_factory=dict)
    """Settings of optimizers for this pipeline, by optimizer name (`optimize: {poqd: {alpha: 0.02}}`);
    `flowc optimize` starts from them and `--set NAME=VALUE` overrides."""
    imports: dict[Name, str] = Field(default_factory=dict)
    """Other specs used as subflows: alias -> path relative to this spec (inside the project)."""
    types: dict[Name, TypeRef] = Field(default_factory=dict)
    """Named types: name -> type expression."""
    inputs: dict[Name, InputDecl] = Field(default_factory=dict)
    """The pipeline's inputs by name."""
    outputs: dict[Name, OutputDecl] = Field(default_factory=dict)
    """The pipeline's outputs by name, each bound to a source."""
    models: dict[Name, ModelDecl] = Field(default_factory=dict)
    """The models nodes may call, by the name nodes use."""
    corpora: dict[Name, CorpusDecl] = Field(default_factory=dict)
    """The corpora retrieve nodes may read, by the name nodes use."""
    nodes: dict[Name, Node] = Field(default_factory=dict)
    """The pipeline's nodes by name; 'kind' says which: llm, retrieve, tool, subflow or map."""
    loops: dict[Name, LoopDecl] = Field(default_factory=dict)
    """Bounded back edges: every cycle of the graph must be one of these."""
    metrics: dict[Name, MetricDecl] = Field(default_factory=dict)
    """How 'flowc eval' and the optimizers score outputs against a dataset."""
    tests: dict[Name, TestCase] = Field(default_factory=dict)
    """Example inputs and what the outputs must satisfy."""

    _spans: dict[tuple[str | int, ...], Span] = PrivateAttr(default_factory=dict)
    _path: str | None = PrivateAttr(default=None)
    _lines: list[str] = PrivateAttr(default_factory=list)

    @field_validator("inputs", "nodes", "models", "corpora", "types", "outputs", "loops")
    @classmethod
    def _no_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            if k in RESERVED:
                raise PydanticCustomError(
                    "reserved-name", "'{name}' is a reserved word and cannot name a declaration", {"name": k}
                )
        return v

    # -- source positions -------------------------------------------------------------------

    @property
    def source_path(self) -> str | None:
        return self._path

    @property
    def base_dir(self) -> Path:
        return Path(self._path).parent if self._path else Path.cwd()

    def with_source(self, path: str | None, spans: dict[tuple[str | int, ...], Span], text: str = "") -> Pipeline:
        self._path = path
        self._spans = spans
        self._lines = text.splitlines()
        return self

    def span_in(self, *path: str | int, offset: int, length: int, value: str) -> Span | None:
        """The span of `value[offset:offset+length]`, where `value` is the text at `path` —
        also inside a multi-line block, by finding the piece on its source line."""
        recorded = self._spans.get(tuple(path))
        if "\n" not in value or (recorded is not None and recorded.end_line in (None, recorded.line)):
            # one line of source (a newline in the value is an escape there): count through escapes
            return self.span(*path, offset=offset, length=length)
        block = self.span(*path)
        if block is None or not self._lines:
            return block
        nth = value.count("\n", 0, offset)
        start_line = self._lines[block.line - 1] if block.line - 1 < len(self._lines) else ""
        # Content starts on the line after the opener when nothing follows the opener (""" or |).
        opener_rest = start_line[block.column - 1 :].strip()
        first = block.line + (1 if opener_rest in ('"""', "|", "|-", "|+", ">", ">-") else 0)
        line_no = first + nth
        needle = value[offset : offset + length]
        line = self._lines[line_no - 1] if 0 < line_no <= len(self._lines) else ""
        col = line.find(needle) + 1 if needle in line else 1
        return Span(block.path, line_no, col, line_no, col + length if needle in line else None)

    def span(self, *path: str | int, offset: int = 0, length: int | None = None) -> Span | None:
        """The span of the value at `path` (or its closest recorded ancestor), shifted by `offset`
        characters when the value is one line of text (to point inside an expression)."""
        spans = self._spans  # private attributes are slow to read on a pydantic model: read once
        p: tuple[str | int, ...] = tuple(path)
        while p and p not in spans:
            p = p[:-1]
        s = spans.get(p)
        if s is None:
            where = self._path
            return Span(where, 1, 1) if where else None
        if p != tuple(path):
            offset = 0
        if offset and s.end_line is not None and s.end_line > s.line:
            return self._folded_span(s, offset, length)
        # the whole value as recorded; a piece of it counted through the quoting of its one source line
        line = self._lines[s.line - 1] if (offset or length) and 0 < s.line <= len(self._lines) else ""
        col = value_column(line, s.column, offset, s.end_column)
        if length:
            end: int | None = value_column(line, s.column, offset + length, s.end_column)
        else:
            end = s.end_column if not offset else None
        return Span(s.path, s.line, col, s.line if end else s.end_line, end)

    def _folded_span(self, s: Span, offset: int, length: int | None) -> Span:
        """`offset` characters into one line of text that the source folds over several lines
        (a long YAML scalar): each line break stands for one space, indentation is not text."""
        lines = self._lines
        line_no, col = s.line, s.column
        if not lines or line_no > len(lines):
            return Span(s.path, s.line, s.column)
        text = lines[line_no - 1]
        avail = len(text.rstrip()) - (col - 1)
        while offset > avail and line_no < min(s.end_line or s.line, len(lines)):
            offset -= max(avail, 0) + 1
            line_no += 1
            text = lines[line_no - 1]
            col = len(text) - len(text.lstrip()) + 1
            avail = len(text.rstrip()) - (col - 1)
        col = min(col + max(offset, 0), len(text) + 1)
        end = min(col + length, len(text) + 1) if length else None
        return Span(s.path, line_no, col, line_no if end else None, end)

    def key_span(self, *path: str | int) -> Span | None:
        """The span of the name that declares the entry at `path`."""
        k = (*path, "@key")
        return self._spans.get(k) or self.span(*path)

    @property
    def spans(self) -> dict[tuple[str | int, ...], Span]:
        return self._spans

    def dump(self) -> dict[str, Any]:
        """The canonical plain-data form (YAML/JSON), without defaults."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
