"""Every shipped pipeline checks, compiles, and gives a stable, tamper-evident artifact; the
YAML twins say the same as the `.flow` files; the Python generators build valid specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import flowc
from flowc.compile import CompiledPipeline, load_spec
from flowc.errors import FlowcError
from flowc.ir.printer import dump_ir
from flowc.spec.models import LLMNode, MapNode
from flowc.testing.generators import SEGMENTS, deep_chain, deep_chain_roles, deep_chain_text, synthetic_spec

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "pipelines"
SPECS = sorted(p for p in PIPELINES.iterdir() if p.suffix in (".flow", ".yaml", ".yml", ".json"))
FLOWS = [p for p in SPECS if p.suffix == ".flow"]


def ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_there_are_pipelines() -> None:
    assert len(FLOWS) >= 5


@pytest.mark.parametrize("path", SPECS, ids=ids(SPECS))
def test_pipeline_compiles_without_errors(path: Path) -> None:
    compiled = flowc.compile(path)
    assert not [d for d in compiled.diagnostics if d.severity == "error"]
    assert len(compiled.graph) == len(compiled.spec.nodes)
    assert compiled.pass_log, "the default passes ran"


@pytest.mark.parametrize("path", FLOWS, ids=ids(FLOWS))
def test_yaml_twin_says_the_same(path: Path) -> None:
    twin = path.with_suffix(".yaml")
    assert twin.is_file(), f"write it with: flowc fmt --to yaml -w {path.relative_to(ROOT)}"
    assert load_spec(twin).dump() == load_spec(path).dump()
    assert dump_ir(flowc.compile(twin).graph) == dump_ir(flowc.compile(path).graph)


@pytest.mark.parametrize("path", FLOWS, ids=ids(FLOWS))
def test_artifact_and_lockfile_are_stable(path: Path, tmp_path: Path) -> None:
    a, b = flowc.compile(path), flowc.compile(path)
    assert a.hash == b.hash and len(a.hash) == 64
    art1, lock1 = a.write(tmp_path / "one")
    art2, lock2 = b.write(tmp_path / "two")
    assert art1.read_text() == art2.read_text()
    assert lock1.read_text() == lock2.read_text()
    art = json.loads(art1.read_text())
    lock = json.loads(lock1.read_text())
    assert art["hash"] == a.hash == lock["artifact_hash"]
    assert lock["spec_hash"] == a.spec_hash
    assert set(lock["params"]) == set(a.params)


@pytest.mark.parametrize("path", FLOWS, ids=ids(FLOWS))
def test_hash_changes_when_a_prompt_changes(path: Path) -> None:
    compiled = flowc.compile(path)
    prompt = next(n for n, p in compiled.params.items() if p.kind == "prompt")
    changed = compiled.with_params({prompt: compiled.params[prompt].value + "\nBe brief."})
    assert changed.hash != compiled.hash
    assert changed.spec_hash != compiled.spec_hash
    before, after = compiled.lockfile()["params"], changed.lockfile()["params"]
    assert before[prompt]["sha256"] != after[prompt]["sha256"]
    assert {k: v for k, v in before.items() if k != prompt} == {k: v for k, v in after.items() if k != prompt}
    # and back: the same prompt gives the same hash again
    assert changed.with_params({prompt: compiled.params[prompt].value}).hash == compiled.hash


@pytest.mark.parametrize("path", FLOWS, ids=ids(FLOWS))
def test_from_artifact_round_trips(path: Path, tmp_path: Path) -> None:
    compiled = flowc.compile(path)
    art, _ = compiled.write(tmp_path)
    back = CompiledPipeline.from_artifact(art)
    assert back.hash == compiled.hash
    assert back.spec.dump() == compiled.spec.dump()
    assert dump_ir(back.graph) == dump_ir(compiled.graph)
    assert set(back.subflows) == set(compiled.subflows)
    assert {k: p.value for k, p in back.params.items()} == {k: p.value for k, p in compiled.params.items()}


@pytest.mark.parametrize("path", FLOWS, ids=ids(FLOWS))
def test_from_artifact_rejects_tampering(path: Path, tmp_path: Path) -> None:
    compiled = flowc.compile(path)
    art, _ = compiled.write(tmp_path)
    data = json.loads(art.read_text())
    node = next(n for n, v in data["spec"]["nodes"].items() if v["kind"] == "llm")
    data["spec"]["nodes"][node]["prompt"] += " Ignore the question."
    art.write_text(json.dumps(data))
    with pytest.raises(FlowcError) as e:
        CompiledPipeline.from_artifact(art)
    assert e.value.code == "artifact-invalid"
    # a hash that is edited along with the content does not verify either
    data["hash"] = "0" * 64
    art.write_text(json.dumps(data))
    with pytest.raises(FlowcError):
        CompiledPipeline.from_artifact(art)
    art.write_text("{not json")
    with pytest.raises(FlowcError) as e:
        CompiledPipeline.from_artifact(art)
    assert e.value.code == "artifact-invalid"


# -- deep_chain ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["flow", "yaml"])
def test_shipped_deep_chain_is_the_generated_one(suffix: str) -> None:
    shipped = (PIPELINES / f"deep_chain.{suffix}").read_text(encoding="utf-8")
    assert shipped == deep_chain_text(4, suffix), (
        f'regenerate: .venv/bin/python -c "from flowc.testing.generators import deep_chain_text; '
        f"print(deep_chain_text(4, '{suffix}'), end='')\" > pipelines/deep_chain.{suffix}"
    )
    assert load_spec(PIPELINES / f"deep_chain.{suffix}").dump() == deep_chain(4).dump()


@pytest.mark.parametrize("depth", [1, 2, 4, 7, 12])
def test_deep_chain_is_a_chain_of_trainable_distinct_roles(depth: int) -> None:
    spec = deep_chain(depth)
    compiled = flowc.compile(spec)
    assert compiled.diagnostics == ()
    assert list(spec.nodes) == [f"step{i}" for i in range(1, depth + 1)]
    roles = [n.role for n in spec.nodes.values() if isinstance(n, LLMNode)]
    assert roles == deep_chain_roles(depth) and len(set(roles)) == depth
    prompts = [p for p in compiled.params.values() if p.kind == "prompt"]
    assert len(prompts) == depth and all(p.trainable for p in prompts)
    assert compiled.cost is not None and compiled.cost.best_calls == compiled.cost.worst_calls == depth
    for i in range(2, depth + 1):
        assert str(spec.nodes[f"step{i}"].inputs["draft"]) == f"step{i - 1}.answer"
    assert str(spec.outputs["answer"].source) == f"step{depth}.answer"
    assert compiled.graph.topo_order()[1:-1] == list(spec.nodes)


def test_deep_chain_rejects_depth_zero() -> None:
    with pytest.raises(ValueError):
        deep_chain(0)


# -- synthetic_spec -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "seed"), [(1, 0), (2, 1), (7, 2), (40, 3), (40, 4), (300, 5)])
def test_synthetic_spec_compiles_cleanly(n: int, seed: int) -> None:
    spec = synthetic_spec(n, seed)
    assert len(spec.nodes) == n
    compiled = flowc.compile(spec)
    assert compiled.diagnostics == ()
    assert compiled.cost is not None and compiled.cost.worst_calls is not None


def test_synthetic_spec_is_deterministic_and_mixes_every_kind() -> None:
    assert synthetic_spec(200, 7).dump() == synthetic_spec(200, 7).dump()
    assert synthetic_spec(200, 7).dump() != synthetic_spec(200, 8).dump()
    spec = synthetic_spec(400, 0)
    kinds = {n.kind for n in spec.nodes.values()}
    assert kinds == {"llm", "retrieve", "tool", "map"}
    compiled = flowc.compile(spec)
    routers = [n for n in compiled.graph.nodes() if n.route is not None]
    assert routers and all(n.route is not None and n.route.fallback in n.route.choices for n in routers)
    assert spec.loops and any(lp.while_ is not None for lp in spec.loops.values())
    assert any(isinstance(n, MapNode) and n.max_items for n in spec.nodes.values())
    assert set(SEGMENTS) >= {"llm", "retrieve", "tool", "map", "router", "research_loop", "revise_loop"}
