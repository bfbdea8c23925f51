"""The executor: runs a CompiledPipeline over its FlowGraph, asynchronously.

How a pipeline runs (docs/language.md, "How a pipeline runs"):

- A node *fires* when something new reached it (a value from a node it reads, or a router choosing
  it) and every input has a value. Pipeline inputs and literals always have one. A value from a node
  in the same loop as the reader must be *fresh* (produced since the reader last fired), so a loop
  body waits for this iteration's values instead of reusing the last one's; other values may be the
  latest one produced. `a ?? b` reads the first alternative that has produced a value.
- A node a router may choose (on a forward route edge) is *gated*: it fires only when a router chose
  it, or when a node downstream of that router sends it a value.
- A loop `from -> to max N` lets values (and route choices) cross its back edges at most N times and
  while its condition holds; after that a router that chooses the loop takes its fallback instead.
- A node outside a loop that reads a node inside it reads the loop's result: it fires once the loop is
  over (when the run is quiet), not on every round — unless a router chose it.
- Independent nodes run concurrently. The run ends when nothing can fire; the outputs are then read.

Every step is recorded (inputs, outputs, LM calls, timing) and, with a run store, persisted as soon as
it completes, so a crash loses no finished work.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import ERROR_CODES, FlowcError, RuntimeFlowError
from flowc.ir.graph import INPUT, OUTPUT, IRNode
from flowc.runtime.conditions import evaluate
from flowc.runtime.config import RunConfig
from flowc.runtime.lm import LMClient
from flowc.runtime.nodes import NodeContext, run_node
from flowc.runtime.outputs import MISSING
from flowc.runtime.plan import Plan
from flowc.runtime.recording import RecordingClient
from flowc.runtime.resources import RetrieverPool
from flowc.runtime.telemetry import set_attributes, span
from flowc.runtime.tools import ToolRegistry
from flowc.runtime.trace import RunResult, StepRecord
from flowc.spec.exprs import Coalesce, Expr, History, Lit, Ref
from flowc.spec.models import MapNode
from flowc.spec.types import OptionalT, coerce_input

__all__ = ["Executor", "RecordingClient"]

log = logging.getLogger(__name__)

_Pending = tuple[str, Mapping[str, Any]]  # a firing whose outputs are not recorded yet: (node, outputs)
_Outcome = tuple[str, dict[str, Any], StepRecord, FlowcError | None]  # (node, outputs, step, error)


class _NotReady(Exception):
    """A binding has no usable value yet."""


@dataclass
class _RunState:
    inputs: dict[str, Any]
    lm: LMClient  # the run's client: the executor's, or the calling step's recorder in a subflow
    values: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # (node, port) -> history
    version: dict[str, int] = field(default_factory=dict)  # node -> completed firings
    visible: dict[tuple[str, str], int] = field(default_factory=dict)  # (src, dst) -> version dst may see
    seen: dict[tuple[str, str], int] = field(default_factory=dict)  # (src, dst) -> version dst consumed
    routed: dict[str, int] = field(default_factory=dict)  # target -> times chosen
    routed_seen: dict[str, int] = field(default_factory=dict)
    loop_count: dict[str, int] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    steps: list[StepRecord] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def fired(self, node: str) -> int:
        return self.version.get(node, 0)


class Executor:
    """Runs one compiled pipeline, any number of times.

    Args:
        compiled: what to run.
        lm: the model client every `llm` node calls (litellm, the embedded model, or a fake).
        tools: functions `tool` nodes call.
        retrievers: shared corpora and indexes (built lazily).
        store: a RunStore persisting runs and steps as they complete (optional).
        config: limits and behaviour of runs.
    """

    def __init__(
        self,
        compiled: CompiledPipeline,
        *,
        lm: LMClient,
        tools: ToolRegistry | None = None,
        retrievers: RetrieverPool | None = None,
        store: Any | None = None,
        config: RunConfig | None = None,
    ) -> None:
        self.compiled = compiled
        self.graph = compiled.graph
        self.lm = lm
        self.tools = tools or ToolRegistry()
        self.config = config or RunConfig()
        self.retrievers = retrievers or RetrieverPool(self.config.cache_dir)
        self.store = store
        self._plan = Plan.of(self.graph)
        self._node_plans: dict[str, Any] = {}  # llm nodes' fixed parts (nodes._LLMPlan), built on first firing
        self._subs: dict[str, Executor] = {}

    # -- public API ------------------------------------------------------------------------------

    async def run(self, inputs: Mapping[str, Any], *, run_id: str | None = None) -> RunResult:
        """Run once. Never raises for a failure inside the pipeline: the result says status='error'
        with the error's code and message (and every step completed before it)."""
        return await self._run(inputs, run_id=run_id, lm=self.lm)

    async def _run(self, inputs: Mapping[str, Any], *, run_id: str | None, lm: LMClient) -> RunResult:
        with span("flowc.run", **{"flowc.pipeline": self.compiled.name, "flowc.artifact": self.compiled.hash}) as sp:
            result = await self._run_traced(inputs, run_id=run_id, lm=lm)
            set_attributes(
                sp,
                **{
                    "flowc.run_id": result.run_id,
                    "flowc.status": result.status,
                    "flowc.error_code": result.error_code,
                    "flowc.steps": len(result.steps),
                },
            )
            return result

    async def _run_traced(self, inputs: Mapping[str, Any], *, run_id: str | None, lm: LMClient) -> RunResult:
        run_id = run_id or uuid.uuid4().hex[:12]
        result = RunResult(
            run_id=run_id, pipeline=self.compiled.name, artifact_hash=self.compiled.hash, inputs=dict(inputs)
        )
        t0 = time.perf_counter()
        if self.store is not None:
            self.store.begin_run(result)
        try:
            state = _RunState(self.check_inputs(inputs), lm)
            result.inputs = state.inputs
            await self._drive(state, result)
            result.outputs = self._read_outputs(state)
        except FlowcError as e:
            result.status, result.error, result.error_code = "error", str(e), e.code
        result.duration_s = time.perf_counter() - t0
        if self.store is not None:
            self.store.end_run(result)
        return result

    async def run_batch(self, inputs: Sequence[Mapping[str, Any]], *, concurrency: int = 8) -> list[RunResult]:
        sem = asyncio.Semaphore(concurrency)

        async def one(x: Mapping[str, Any]) -> RunResult:
            async with sem:
                return await self.run(x)

        return list(await asyncio.gather(*(one(x) for x in inputs)))

    def run_sync(self, inputs: Mapping[str, Any]) -> RunResult:
        """A blocking `run`, for scripts and notebooks without an event loop."""
        return asyncio.run(self.run(inputs))

    def check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        spec = self.compiled.spec
        unknown = [k for k in inputs if k not in spec.inputs]
        if unknown:
            raise RuntimeFlowError(
                "missing-pipeline-input",
                f"'{unknown[0]}' is not an input of '{spec.pipeline}'",
                hint=f"inputs: {', '.join(spec.inputs) or 'none'}",
            )
        out: dict[str, Any] = {}
        for name, decl in spec.inputs.items():
            port = self.graph.node(INPUT).outputs[name]
            if name not in inputs:
                if decl.default is None and not isinstance(port.type, OptionalT):
                    raise RuntimeFlowError(
                        "missing-pipeline-input",
                        f"input '{name}' ({decl.type}) is required",
                        hint=f"pass it: --input {name}=...",
                    )
                out[name] = decl.default
                continue
            try:
                out[name] = coerce_input(inputs[name], port.type)
            except ValueError as e:
                raise RuntimeFlowError(
                    "input-type-error",
                    f"input '{name}' should be {decl.type}: {e}",
                    hint=f"pass a {decl.type} value for '{name}'",
                ) from None
        return out

    # -- scheduling --------------------------------------------------------------------------------

    async def _drive(self, state: _RunState, result: RunResult) -> None:
        """Fire what can fire until nothing can. A lone ready node with nothing else running is
        awaited right here, with no task around it (a chain of nodes costs no scheduling); only
        nodes that run alongside others get a task, and completions wake this loop through a
        done-callback instead of `asyncio.wait` re-registering on every running task."""
        tasks: dict[asyncio.Task[_Outcome], str] = {}
        wake: list[asyncio.Future[None]] = []

        def on_done(_: asyncio.Task[_Outcome]) -> None:
            if wake and not wake[0].done():
                wake[0].set_result(None)

        everyone = [n.name for n in self.graph.nodes()]
        candidates = everyone
        try:
            while True:
                ready = self._ready(state, candidates, len(tasks), allow_fallback=False)
                if not ready and not tasks:
                    # Quiet: nothing running and nothing fresh to do. Only now may a node read the
                    # fallback of an `a ?? b` whose `a` has not produced (it might still have).
                    ready = self._ready(state, everyone, 0, allow_fallback=True)
                if not ready and not tasks:
                    return
                if len(ready) == 1 and not tasks:
                    name, bound = ready[0]
                    state.running.add(name)
                    outcome = await self._step(state, name, bound)
                    candidates = self._settle(state, result, [outcome])
                    continue
                for name, bound in ready:
                    state.running.add(name)
                    task = asyncio.create_task(self._step(state, name, bound))
                    task.add_done_callback(on_done)
                    tasks[task] = name
                if not any(t.done() for t in tasks):
                    wake[:] = [asyncio.get_running_loop().create_future()]
                    await wake[0]
                # In firing order, so traces are stable.
                finished = [t for t in tasks if t.done()]
                for t in finished:
                    del tasks[t]
                candidates = self._settle(state, result, [t.result() for t in finished])
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    def _settle(self, state: _RunState, result: RunResult, outcomes: list[_Outcome]) -> list[str]:
        """Record finished steps (every one, also beside a failure); returns the nodes to reconsider."""
        candidates: list[str] = []
        errors: list[FlowcError] = []
        for name, outputs, step, error in outcomes:
            state.running.discard(name)
            # Numbered as they complete (concurrent steps start at the same count), so `seq` is
            # unique within the run and follows `RunResult.path`.
            step.seq = len(state.steps)
            state.steps.append(step)
            result.steps.append(step)
            if self.store is not None:
                self.store.add_step(result.run_id, step)
            if error is not None:
                errors.append(error)  # record every step that finished alongside it first
                continue
            candidates += self._complete(state, name, outputs, step)
        if errors:
            raise errors[0]
        return list(dict.fromkeys(candidates))

    def _ready(
        self, state: _RunState, names: list[str], running: int, *, allow_fallback: bool
    ) -> list[tuple[str, dict[str, Any]]]:
        """The nodes among `names` that fire now, with their input values (consumed)."""
        ready: list[tuple[str, dict[str, Any]]] = []
        for name in names:
            if name in state.running:
                continue
            bound = self._try_fire(state, name, allow_fallback)
            if bound is None:
                continue
            if len(state.steps) + running + len(ready) >= self.config.max_steps:
                raise RuntimeFlowError(
                    "node-failed",
                    f"the run made {self.config.max_steps} steps and was stopped as runaway",
                    node=name,
                    hint="raise RunConfig.max_steps, or check loop bounds",
                )
            ready.append((name, bound))
        return ready

    def _try_fire(self, state: _RunState, name: str, allow_fallback: bool) -> dict[str, Any] | None:
        """The node's input values if it should fire now (consuming what it read), else None."""
        node = self.graph.node(name)
        plan = self._plan
        fresh = {src for src in plan.sources[name] if self._fresh(state, src, name)}
        route_fresh = state.routed.get(name, 0) > state.routed_seen.get(name, 0)
        if not fresh and not route_fresh and (state.fired(name) or plan.gates[name]):
            return None  # nothing new: a node starts once on its own, then only when something reaches it
        if plan.gates[name] and not route_fresh and not (fresh & plan.enablers[name]):
            return None
        if not allow_fallback and not route_fresh and fresh & plan.loop_sources[name]:
            return None  # a loop's result: read it when the run is quiet, i.e. when the loop is over
        try:
            values = {port: self._read(state, name, node, expr, allow_fallback) for port, expr in node.bindings.items()}
        except _NotReady:
            return None
        for src in plan.node_sources[name]:
            state.seen[(src, name)] = state.visible.get((src, name), 0)
        state.routed_seen[name] = state.routed.get(name, 0)
        return values

    def _fresh(self, state: _RunState, src: str, dst: str) -> bool:
        return state.visible.get((src, dst), 0) > state.seen.get((src, dst), 0)

    def _read(self, state: _RunState, reader: str, node: IRNode, expr: Expr, allow_fallback: bool = True) -> Any:
        if isinstance(expr, Coalesce):
            for i, opt in enumerate(expr.options):
                try:
                    v = self._read(state, reader, node, opt)
                except _NotReady:
                    if self._produced(state, opt, reader) or not allow_fallback:
                        raise  # it has a value, just not a fresh one yet, or it may still produce one: wait
                    continue
                if v is None and i < len(expr.options) - 1:
                    continue
                return v
            raise _NotReady
        if isinstance(expr, Lit):
            return expr.value
        if isinstance(expr, History):
            src = expr.ref.node or ""
            hist = state.values.get((src, expr.ref.port), [])
            if not state.visible.get((src, reader), 0):
                raise _NotReady
            if src in self._plan.same_loop.get(reader, set()) and not self._fresh(state, src, reader):
                raise _NotReady
            return list(hist[: self._visible_count(state, src, reader)])
        assert isinstance(expr, Ref)
        if expr.node is None:
            if isinstance(node.spec, MapNode) and expr.port == node.spec.item:
                return _MAP_ITEM
            if expr.port in state.inputs:
                return state.inputs[expr.port]
            raise _NotReady
        if not state.visible.get((expr.node, reader), 0):
            raise _NotReady
        if expr.node in self._plan.same_loop.get(reader, set()) and not self._fresh(state, expr.node, reader):
            raise _NotReady
        return state.values[(expr.node, expr.port)][self._visible_count(state, expr.node, reader) - 1]

    def _visible_count(self, state: _RunState, src: str, dst: str) -> int:
        return state.visible.get((src, dst), 0)

    def _produced(self, state: _RunState, expr: Expr, reader: str) -> bool:
        ref = expr.ref if isinstance(expr, History) else expr
        return isinstance(ref, Ref) and ref.node is not None and state.visible.get((ref.node, reader), 0) > 0

    def _complete(self, state: _RunState, name: str, outputs: dict[str, Any], step: StepRecord) -> list[str]:
        """Record a node's outputs, open the edges its values may cross; returns nodes to reconsider."""
        node = self.graph.node(name)
        for port, v in outputs.items():
            state.values.setdefault((name, port), []).append(v)
        state.version[name] = state.fired(name) + 1
        open_loops = {loop: self._loop_open(state, loop, node, outputs) for loop in self._loops_from(name)}
        for dst in self._plan.consumers.get(name, []):
            loop = self._plan.loop_of_edge.get((name, dst))
            if loop is None or open_loops[loop]:
                state.visible[(name, dst)] = state.version[name]
        if node.route is not None:
            choice = outputs.get(node.route.port)
            if isinstance(choice, str) and choice in self._plan.consumers.get(name, []) + list(node.route.choices):
                state.routed[choice] = state.routed.get(choice, 0) + 1
        for loop, is_open in open_loops.items():
            if is_open:
                state.loop_count[loop] = state.loop_count.get(loop, 0) + 1
        return [*self._plan.consumers.get(name, []), *(node.route.choices if node.route else ())]

    def _loops_from(self, name: str) -> list[str]:
        return [loop for loop, info in self.graph.loops.items() if info.src == name]

    def _loop_open(self, state: _RunState, loop: str, node: IRNode, outputs: dict[str, Any]) -> bool:
        """Whether this firing of the loop's source sends values back round the loop."""
        if not self._loop_allows(state, loop):
            return False
        if node.route is not None:
            # A router continues the loop only by choosing a node inside it.
            choice = str(outputs.get(node.route.port))
            return self._plan.loop_of_edge.get((node.name, choice)) == loop
        return True

    def _loop_allows(self, state: _RunState, loop: str, pending: _Pending | None = None) -> bool:
        """Whether `loop` may be taken once more. `pending` is a (node, outputs) firing not yet
        recorded (a router settling its choice), which the condition sees as the latest values."""
        info = self.graph.loops[loop]
        if state.loop_count.get(loop, 0) >= info.max:
            return False
        return info.condition is None or bool(evaluate(info.condition, state.inputs, state.values, pending))

    # -- one step ----------------------------------------------------------------------------------

    async def _step(self, state: _RunState, name: str, inputs: dict[str, Any]) -> _Outcome:
        with span("flowc.node", **{"flowc.node": name, "flowc.kind": self.graph.node(name).kind}) as sp:
            out = await self._step_traced(state, name, inputs)
            set_attributes(sp, **{"flowc.status": out[2].status, "flowc.note": out[2].note})
            return out

    async def _step_traced(self, state: _RunState, name: str, inputs: dict[str, Any]) -> _Outcome:
        node = self.graph.node(name)
        # Built from trusted values, every field given: no validation and no default factories
        # (which pydantic inspects on each model_construct) on the hot path.
        step = StepRecord.model_construct(
            seq=len(state.steps),
            node=name,
            kind=node.kind,
            iteration=state.fired(name),
            inputs=_jsonable(inputs),
            outputs={},
            status="ok",
            error=None,
            note=None,
            started_s=time.perf_counter() - state.started,
            duration_s=0.0,
            lm_calls=[],
        )
        t0 = time.perf_counter()
        recorder = RecordingClient(state.lm, step.lm_calls)

        async def subflow(alias: str, sub_inputs: dict[str, Any]) -> dict[str, Any]:
            return await self._subflow(alias, sub_inputs, lm=recorder, node=name)

        ctx = NodeContext(
            compiled=self.compiled,
            lm=recorder,
            tools=self.tools,
            retrievers=self.retrievers,
            config=self.config,
            subflow_executor=subflow,
            map_item=_MAP_ITEM,
            earlier={port: list(state.values.get((name, port), ())) for port in node.outputs},
            plans=self._node_plans,
        )
        try:
            outputs = await run_node(node, inputs, ctx)
            step.note = self._route_note(state, node, outputs)
        except FlowcError as e:
            step.status, step.error = "error", str(e)
            step.duration_s = time.perf_counter() - t0
            return name, {}, step, e
        except Exception as e:  # a bug in a client, tool wrapper or retriever: still a typed, recorded failure
            log.debug("node '%s' raised %s", name, type(e).__name__, exc_info=e)
            err = RuntimeFlowError(
                "node-failed",
                f"{type(e).__name__}: {e}",
                node=name,
                hint="an unexpected exception (not a flowc error); run with -vv to see its traceback",
            )
            err.__cause__ = e
            step.status, step.error = "error", str(err)
            step.duration_s = time.perf_counter() - t0
            return name, {}, step, err
        step.outputs = _jsonable(outputs)
        step.duration_s = time.perf_counter() - t0
        return name, outputs, step, None

    def _route_note(self, state: _RunState, node: IRNode, outputs: dict[str, Any]) -> str | None:
        """Settle a router's choice: an unreadable answer or an exhausted loop takes the fallback."""
        r = node.route
        if r is None:
            return None
        choice = outputs.get(r.port)
        note = None
        if choice is MISSING or choice not in r.choices:
            if r.fallback is None:
                raise RuntimeFlowError(
                    "route-invalid-choice",
                    f"router answered outside {', '.join(r.choices)} and has no fallback",
                    node=node.name,
                    hint=f"add 'fallback: {r.choices[-1]}'",
                )
            note = f"no valid choice in the reply: took fallback '{r.fallback}'"
            choice = r.fallback
        loop = self._plan.loop_of_edge.get((node.name, choice))
        if loop is not None and not self._loop_allows(state, loop, (node.name, {**outputs, r.port: choice})):
            exit_to = (
                r.fallback
                if r.fallback and (node.name, r.fallback) not in self._plan.loop_of_edge
                else next((c for c in r.choices if (node.name, c) not in self._plan.loop_of_edge), None)
            )
            note = f"loop '{loop}' is done: {exit_to} instead of {choice}"
            if exit_to is None:
                raise RuntimeFlowError(
                    "loop-exhausted",
                    f"loop '{loop}' is exhausted and router has no other choice",
                    node=node.name,
                    hint="add a non-loop choice and make it the fallback",
                )
            choice = exit_to
        outputs[r.port] = choice
        return note

    async def _subflow(self, alias: str, inputs: dict[str, Any], *, lm: LMClient, node: str) -> dict[str, Any]:
        """Run an imported pipeline for the step of `node`; its model calls go through that step's
        recorder `lm`, so they show in the step's trace and count in the run's tokens and cost."""
        sub = self.compiled.subflows[alias]
        if alias not in self._subs:
            self._subs[alias] = Executor(
                sub, lm=self.lm, tools=self.tools, retrievers=self.retrievers, config=self.config
            )
        res = await self._subs[alias]._run(inputs, run_id=None, lm=lm)
        if res.status != "ok":
            code = res.error_code if res.error_code in ERROR_CODES else "node-failed"
            raise RuntimeFlowError(
                code,  # type: ignore[arg-type]
                f"subflow '{alias}' failed: {res.error}",
                node=node,
                hint="run the subflow alone with 'flowc run' to see its trace",
            )
        return res.outputs

    # -- outputs -----------------------------------------------------------------------------------

    def _read_outputs(self, state: _RunState) -> dict[str, Any]:
        out: dict[str, Any] = {}
        outnode = self.graph.node(OUTPUT)
        for name, expr in outnode.bindings.items():
            value = self._latest(state, expr)
            if value is _ABSENT:
                if isinstance(outnode.inputs[name].type, OptionalT):
                    out[name] = None
                    continue
                never = [n.name for n in self.graph.nodes() if not state.fired(n.name)]
                raise RuntimeFlowError(
                    "node-failed",
                    f"output '{name}' was never produced",
                    hint=f"nodes that never ran: {', '.join(never) or 'none'}; see the trace",
                )
            out[name] = value
        return out

    def _latest(self, state: _RunState, expr: Expr) -> Any:
        if isinstance(expr, Coalesce):
            for opt in expr.options:
                v = self._latest(state, opt)
                if v is not _ABSENT and v is not None:
                    return v
            return _ABSENT
        if isinstance(expr, Lit):
            return expr.value
        if isinstance(expr, History):
            hist = state.values.get((expr.ref.node or "", expr.ref.port))
            return list(hist) if hist else _ABSENT
        assert isinstance(expr, Ref)
        if expr.node is None:
            return state.inputs.get(expr.port, _ABSENT)
        hist = state.values.get((expr.node, expr.port))
        return hist[-1] if hist else _ABSENT


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_ABSENT: Any = _Sentinel("ABSENT")
_MAP_ITEM: Any = _Sentinel("MAP_ITEM")


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, str | int | float | bool):
        return v
    return repr(v)
