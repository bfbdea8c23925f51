"""The façade: spec text/file/model → checked FlowGraph → an immutable CompiledPipeline.

`compile()` is the only way to get something that runs. It loads imports (subflows) relative to
the spec, lowers, runs the passes (verifying the IR after each) and reports every error of the
spec at once as a SpecErrors. The compiled pipeline serialises to a content-hashed JSON artifact
and a lockfile; applying a ParamPatch gives a new compiled pipeline (`with_params`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flowc.errors import Diagnostic, FlowcError, SpecErrors
from flowc.ir.graph import FlowGraph, Param
from flowc.ir.lower import lower
from flowc.passes.base import Pass, PassContext
from flowc.passes.check_files import check_files
from flowc.passes.estimate_cost import CostEstimate
from flowc.passes.pipeline import PassPipeline, default_passes
from flowc.source import SourceFile, Span
from flowc.spec.adapters import AdapterRef, resolve_adapters, short
from flowc.spec.io import parse_yaml
from flowc.spec.models import LLMNode, MapNode, Pipeline
from flowc.spec.paths import allowing, spec_path
from flowc.syntax.parser import parse_flow
from flowc.version import __version__

ARTIFACT_FORMAT = 1
SPEC_SUFFIXES = (".flow", ".yaml", ".yml", ".json")


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def sha256(data: Any) -> str:
    text = data if isinstance(data, str) else canonical_json(data)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_spec(path: str | Path) -> Pipeline:
    """Read a spec file (`.flow`, `.yaml`/`.yml` or `.json`); raises SpecErrors on any problem."""
    p = Path(path)
    if not p.is_file():
        near = sorted(str(x) for x in p.parent.glob(f"*{p.suffix}"))[:5] if p.parent.is_dir() else []
        raise FlowcError(
            "file-not-found",
            f"no spec file at '{path}'",
            hint=f"files there: {', '.join(near)}" if near else "check the path",
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecErrors(
            [
                Diagnostic(
                    "unexpected-character",
                    f"the file is not UTF-8 text ({e.reason})",
                    Span(str(path), 1, 1),
                    hint="save it as UTF-8",
                )
            ]
        ) from None
    return parse_spec_text(text, str(path))


def parse_spec_text(text: str, path: str) -> Pipeline:
    if path.endswith((".yaml", ".yml", ".json")):
        return parse_yaml(text, path)
    return parse_flow(text, path)


@dataclass(frozen=True)
class CompiledPipeline:
    """A checked pipeline, ready to run. Immutable: optimizers return new ones."""

    spec: Pipeline
    graph: FlowGraph
    subflows: Mapping[str, CompiledPipeline]
    pass_log: tuple[str, ...]
    diagnostics: tuple[Diagnostic, ...]
    cost: CostEstimate | None
    spec_hash: str
    hash: str = field(default="")
    # model name -> its adapter, hashed at compile time (the `weights` params' values name them)
    adapters: Mapping[str, AdapterRef] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.pipeline

    @property
    def params(self) -> Mapping[str, Param]:
        return self.graph.params

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    # -- artifact ----------------------------------------------------------------------------------

    def to_artifact(self) -> dict[str, Any]:
        """The JSON artifact: everything needed to rebuild and run this pipeline, content-hashed."""
        body = self._artifact_body()
        return {**body, "hash": sha256(body)}

    def _artifact_body(self) -> dict[str, Any]:
        g = self.graph
        return {
            "format": ARTIFACT_FORMAT,
            "flowc": __version__,
            "pipeline": self.name,
            "spec_hash": self.spec_hash,
            "spec": self.spec.dump(),
            "source_path": self.spec.source_path,
            "subflows": {k: v.to_artifact() for k, v in self.subflows.items()},
            "passes": list(self.pass_log),
            "params": {
                n: {"kind": p.kind, "node": p.node, "trainable": p.trainable, "role": p.role, "value": p.value}
                for n, p in g.params.items()
            },
            "graph": {
                "nodes": [
                    {
                        "name": n.name,
                        "kind": n.kind,
                        "model": n.model,
                        "inputs": {k: str(p.type) for k, p in n.inputs.items()},
                        "outputs": {k: str(p.type) for k, p in n.outputs.items()},
                    }
                    for n in g.nodes(pseudo=True)
                ],
                "edges": [
                    {
                        "src": e.src,
                        "src_port": e.src_port,
                        "dst": e.dst,
                        "dst_port": e.dst_port,
                        "kind": e.kind,
                        "option": e.option,
                        "loop": e.loop,
                    }
                    for e in g.edges()
                ],
            },
            "cost": self.cost.to_json() if self.cost else None,
            # Only when there are adapters, so that artifacts without weights keep their hashes.
            **({"weights": self.weights_record()} if self.adapters else {}),
        }

    def weights_record(self) -> dict[str, Any]:
        """Each model's adapter with the checksums that pin it (adapter, served GGUF, base)."""
        return {name: ref.record() for name, ref in self.adapters.items()}

    def lockfile(self) -> dict[str, Any]:
        """What this artifact pins: models and their settings, each prompt's hash, corpora, weights."""
        spec = self.spec
        corpora = {}
        for name, c in spec.corpora.items():
            path = spec.base_dir / c.path
            corpora[name] = {"path": c.path, "sha256": _file_hash(path)}
        weights = self.weights_record()
        return {
            "flowc": __version__,
            "pipeline": self.name,
            "spec_hash": self.spec_hash,
            "artifact_hash": self.to_artifact()["hash"],
            "models": {n: m.model_dump(mode="json", exclude_defaults=False) for n, m in spec.models.items()},
            "params": {
                n: {"kind": p.kind, "trainable": p.trainable, "sha256": sha256(p.value)}
                for n, p in self.graph.params.items()
            },
            "corpora": corpora,
            "weights": weights,
            "subflows": {k: v.spec_hash for k, v in self.subflows.items()},
        }

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write `<name>.artifact.json` and `<name>.lock.json` into `out_dir`; returns both paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        art = out / f"{self.name}.artifact.json"
        lock = out / f"{self.name}.lock.json"
        _atomic_write(art, json.dumps(self.to_artifact(), indent=2, ensure_ascii=False) + "\n")
        _atomic_write(lock, json.dumps(self.lockfile(), indent=2, ensure_ascii=False) + "\n")
        return art, lock

    @classmethod
    def from_artifact(cls, path: str | Path) -> CompiledPipeline:
        """Rebuild a compiled pipeline from its artifact, checking the content hash."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise FlowcError(
                "artifact-invalid", f"cannot read artifact '{path}': {e}", hint="recreate it with 'flowc compile'"
            ) from None
        return cls.from_artifact_data(data, str(path))

    @classmethod
    def from_artifact_data(cls, data: dict[str, Any], where: str = "<artifact>") -> CompiledPipeline:
        if not isinstance(data, dict) or data.get("format") != ARTIFACT_FORMAT:
            raise FlowcError(
                "artifact-invalid",
                f"'{where}' is not a flowc artifact of format {ARTIFACT_FORMAT}",
                hint="recreate it with 'flowc compile'",
            )
        body = {k: v for k, v in data.items() if k != "hash"}
        if sha256(body) != data.get("hash"):
            raise FlowcError(
                "artifact-invalid",
                f"the content of '{where}' does not match its hash (edited by hand?)",
                hint="edit the spec and recompile instead of editing the artifact",
            )
        spec = Pipeline.model_validate(data["spec"])
        spec.with_source(data.get("source_path"), {})
        subs = {k: cls.from_artifact_data(v, f"{where}:{k}") for k, v in data.get("subflows", {}).items()}
        pinned = [str(rec.get("adapter")) for rec in (data.get("weights") or {}).values() if isinstance(rec, dict)]
        with allowing(_pinned_folders(pinned, spec.base_dir)):
            compiled = _compile_spec(spec, subs, passes=None, verify_each=True, on_pass=None)
        _same_adapters(data.get("weights") or {}, compiled, where)
        return compiled

    # -- params ------------------------------------------------------------------------------------

    def with_params(self, values: Mapping[str, Any]) -> CompiledPipeline:
        """A new compiled pipeline with some params replaced (prompts, system prompts, demos, weights).

        The result is checked like any spec: a prompt that loses a placeholder's binding fails here.
        """
        nodes = dict(self.spec.nodes)
        models = dict(self.spec.models)
        pinned: dict[str, str | None] = {}  # model -> the adapter sha256 the value names
        for name, value in values.items():
            if name not in self.graph.params:
                raise FlowcError(
                    "unknown-name",
                    f"no param '{name}' in pipeline '{self.name}'",
                    hint=f"params: {', '.join(self.graph.params)}",
                )
            p = self.graph.params[name]
            if p.kind == "weights":
                key = name.rsplit(".", 1)[0]
                path, pinned[key] = _weights_value(name, value)
                models[key] = models[key].model_copy(update={"adapter": path})
                continue
            assert p.node is not None
            node = nodes[p.node]
            field_name = {"prompt": "prompt", "system": "system", "demos": "demos"}[p.kind]
            if isinstance(node, MapNode):
                body = node.body.model_copy(update={field_name: value})
                nodes[p.node] = node.model_copy(update={"body": body})
            else:
                assert isinstance(node, LLMNode)
                nodes[p.node] = node.model_copy(update={field_name: value})
        spec = Pipeline.model_validate(
            {
                **self.spec.dump(),
                "nodes": {k: v.model_dump(mode="json", by_alias=True) for k, v in nodes.items()},
                "models": {k: v.model_dump(mode="json") for k, v in models.items()},
            }
        )
        spec.with_source(self.spec.source_path, dict(self.spec.spans))
        # an optimizer files adapters in its run directory, often outside the project: pinned below
        with allowing(_pinned_folders([str(models[m].adapter) for m in pinned], spec.base_dir)):
            compiled = _compile_spec(spec, self.subflows, passes=None, verify_each=True, on_pass=None)
        for model, sha in pinned.items():
            got = compiled.adapters[model].sha256 if model in compiled.adapters else None
            if sha is not None and got != sha:
                raise FlowcError(
                    "adapter-checksum-mismatch",
                    f"the adapter given for '{model}.weights' has sha256 {short(got or '')}…, "
                    f"the value names {short(sha)}…",
                    hint="the file changed after the value was made: use the value its optimizer wrote, "
                    "or rerun the optimizer",
                )
        return compiled

    def with_models(self, models: Mapping[str, Mapping[str, Any]]) -> CompiledPipeline:
        """A new compiled pipeline with some model declarations changed, e.g.
        `{"small": {"id": "openai/gpt-4o-mini", "api_base": None}}` (what `--model` does). Only
        the declarations of this pipeline change; the result is checked like any spec."""
        unknown = [n for n in models if n not in self.spec.models]
        if unknown:
            raise FlowcError(
                "unknown-model",
                f"'{self.name}' declares no model '{unknown[0]}'",
                hint=f"declared models: {', '.join(self.spec.models) or 'none'}",
            )
        decls = {
            k: v.model_copy(update=dict(models.get(k, {}))).model_dump(mode="json") for k, v in self.spec.models.items()
        }
        spec = Pipeline.model_validate({**self.spec.dump(), "models": decls})
        spec.with_source(self.spec.source_path, dict(self.spec.spans))
        return _compile_spec(spec, self.subflows, passes=None, verify_each=True, on_pass=None)


def _weights_value(name: str, value: Any) -> tuple[str | None, str | None]:
    """(path, sha256) of a `<model>.weights` value: None (no adapter) or {"path": ..., "sha256": ...}."""
    if value is None:
        return None, None
    if (
        isinstance(value, Mapping)
        and isinstance(value.get("path"), str)
        and isinstance(value.get("sha256"), str)
        and len(value["sha256"]) == 64
        and set(value) <= {"path", "sha256"}
    ):
        return value["path"], value["sha256"]
    raise FlowcError(
        "invalid-value",
        f'\'{name}\' must be null or {{"path": ..., "sha256": ...}} naming an adapter, not {value!r:.80}',
        hint="weights values name a .safetensors adapter by path and content hash "
        "(flowc.optimizers.weights.AdapterStore.publish makes them)",
    )


def _pinned_folders(adapters: Sequence[str], base_dir: Path) -> list[Path]:
    """The folders of adapters pinned by sha256 (a weights value, an artifact's lock): the pin fixes
    which bytes may be used, so they are allowed wherever they lie (security.md, "Adapters")."""
    return [(base_dir / a).parent for a in adapters]


def _same_adapters(recorded: Mapping[str, Any], compiled: CompiledPipeline, where: str) -> None:
    """Refuse an artifact whose adapters (or their served GGUFs) changed since it was compiled."""
    now = compiled.weights_record()
    for model, rec in recorded.items():
        cur = now.get(model)
        for key, what in (("sha256", "adapter"), ("served_sha256", "served GGUF")):
            if cur is None or cur.get(key) != rec.get(key):
                raise FlowcError(
                    "adapter-checksum-mismatch",
                    f"'{where}': the {what} of model '{model}' ({rec.get('adapter')}) has sha256 "
                    f"{short(str(cur.get(key) if cur else 'missing'))}…, the artifact pins {short(str(rec.get(key)))}…",
                    hint="the file changed after 'flowc compile': restore it, or recompile the spec",
                )


def _file_hash(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def compile(
    source: str | Path | Pipeline,
    *,
    passes: Sequence[Pass] | None = None,
    verify_each: bool = True,
    on_pass: Callable[[str, FlowGraph], None] | None = None,
    allow_paths: Sequence[str | Path] = (),
) -> CompiledPipeline:
    """Compile a spec (a path, `.flow` text, or a Pipeline) into a CompiledPipeline.

    `allow_paths`: folders outside the spec's project whose files the spec may read (corpora,
    imports, adapters); see flowc/spec/paths.py.

    Raises:
        SpecErrors: every error found (warnings ride along in `.diagnostics` of the result).
        FlowcError: the file does not exist, or a pass broke the IR.
    """
    with allowing(allow_paths):
        return _compile(source, passes, verify_each, on_pass)


def _compile(
    source: str | Path | Pipeline,
    passes: Sequence[Pass] | None,
    verify_each: bool,
    on_pass: Callable[[str, FlowGraph], None] | None,
) -> CompiledPipeline:
    if isinstance(source, Pipeline):
        spec = source
    elif isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and (source.endswith(SPEC_SUFFIXES) or Path(source).is_file())
    ):
        spec = load_spec(source)
    else:
        spec = parse_flow(str(source), "<string>")
    subflows = _load_imports(spec, stack=(str(Path(spec.source_path).resolve()) if spec.source_path else "<root>",))
    return _compile_spec(spec, subflows, passes=passes, verify_each=verify_each, on_pass=on_pass)


def _load_imports(spec: Pipeline, stack: tuple[str, ...]) -> dict[str, CompiledPipeline]:
    out: dict[str, CompiledPipeline] = {}
    errors: list[Diagnostic] = []
    sources: dict[str, SourceFile] = {}
    for alias, rel in spec.imports.items():
        where = spec_path(rel, spec.base_dir)
        path = where.resolved
        span = spec.span("imports", alias)
        if not where.allowed:
            errors.append(
                Diagnostic(
                    "path-outside-project", where.outside_message(f"import '{alias}'"), span, where.outside_hint()
                )
            )
            continue
        if str(path) in stack:
            errors.append(
                Diagnostic(
                    "import-cycle",
                    f"importing '{rel}' closes a cycle: " + " -> ".join(Path(s).name for s in (*stack, str(path))),
                    span,
                    "a flow cannot use itself, directly or through others",
                )
            )
            continue
        if not path.is_file():
            errors.append(
                Diagnostic(
                    "import-not-found",
                    f"cannot find '{rel}' (looked for {path})",
                    span,
                    "import paths are relative to the importing spec",
                )
            )
            continue
        try:
            sub = load_spec(path)
        except SpecErrors as e:
            if any(d.code == "not-a-spec" for d in e.diagnostics):  # say where it was imported, show nothing of it
                errors.append(
                    Diagnostic(
                        "not-a-spec",
                        f"import '{alias}' reads '{rel}', which is not a flowc spec",
                        span,
                        "import a .flow, .yaml or .json spec",
                    )
                )
                continue
            raise
        subs = _load_imports(sub, (*stack, str(path)))
        out[alias] = _compile_spec(sub, subs, passes=None, verify_each=True, on_pass=None)
    if errors:
        if spec.source_path and Path(spec.source_path).is_file():
            sources[spec.source_path] = SourceFile.read(spec.source_path)
        raise SpecErrors([*errors, *check_files(spec)], sources)  # the other paths' problems too
    return out


def _compile_spec(
    spec: Pipeline,
    subflows: Mapping[str, CompiledPipeline],
    *,
    passes: Sequence[Pass] | None,
    verify_each: bool,
    on_pass: Callable[[str, FlowGraph], None] | None,
) -> CompiledPipeline:
    graph, diags = lower(spec, {k: v.graph for k, v in subflows.items()})
    adapters, weight_diags = resolve_adapters(spec)
    for model, ref in adapters.items():
        param = graph.params.get(f"{model}.weights")
        if param is not None:  # the weights param names its adapter by content hash
            graph.params[param.name] = replace(param, value=ref.param_value())
    ctx = PassContext(spec, [*check_files(spec), *diags, *weight_diags])  # files are checked whatever the pass list
    pipeline = PassPipeline(list(passes) if passes is not None else default_passes(), verify_each, on_pass)
    graph, log = pipeline.run(graph, ctx)
    if ctx.has_errors:
        sources = {}
        if spec.source_path and spec.spans:
            sources[spec.source_path] = SourceFile(spec.source_path, "\n".join(spec._lines))
        raise SpecErrors(ctx.diagnostics, sources)
    spec_hash = sha256({"spec": spec.dump(), "subflows": {k: v.spec_hash for k, v in subflows.items()}})
    cost = ctx.results.get("estimate-cost")
    compiled = CompiledPipeline(
        spec,
        graph,
        dict(subflows),
        tuple(log),
        tuple(ctx.diagnostics),
        cost if isinstance(cost, CostEstimate) else None,
        spec_hash,
        adapters=adapters,
    )
    object.__setattr__(compiled, "hash", compiled.to_artifact()["hash"])
    return compiled
