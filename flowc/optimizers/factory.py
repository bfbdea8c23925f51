"""Building an optimization job's clients and optimizer: one builder for `flowc optimize`, the
benchmarks and anyone scripting flowc.

    clients = make_clients(compiled, optimizer_model="local/qwen-coder-1.5b")
    opt = make_optimizer("tep", clients, steps=3, settings={"beta0": 0.2})
    patch = opt.optimize(compiled, trainset=..., valset=..., metric=..., budget=..., seed=0)

The pipeline's client and the optimizer's share one rate-limit registry, so a model's RPM/TPM hold
across both (the optimizer model is often one the spec declares, with the spec's policy).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.optimizers.progress import ProgressHook
from flowc.runtime.lm import LMClient
from flowc.source import Span

#: optimizer fields that `settings` does not set (the clients, and what other arguments set)
NOT_SETTABLE = frozenset(
    {"pipeline_lm", "optimizer_lm", "optimizer_model", "only", "frozen", "resume", "stats", "progress"}
)


@dataclass(frozen=True)
class Clients:
    """The clients of one job: the pipeline's, and the optimizer's (critic, feedback, rewrites)."""

    pipeline: LMClient
    optimizer: LMClient
    optimizer_model: str


def make_clients(
    compiled: CompiledPipeline,
    optimizer_model: str | None = None,
    *,
    pipeline_lm: LMClient | None = None,
    optimizer_lm: LMClient | None = None,
) -> Clients:
    """The spec's client for the pipeline and a client for `optimizer_model` (default: the spec's
    first model), sharing one rate-limit registry and the spec's policies. Pass `pipeline_lm` or
    `optimizer_lm` to use a client of your own for either (a fake, a recorded one)."""
    from flowc.runtime import session
    from flowc.runtime.client import ModelClient
    from flowc.runtime.ratelimit import RateLimiters

    model = optimizer_model or next(iter(compiled.spec.models.values())).id
    limiters = RateLimiters()
    pipeline = pipeline_lm or session.default_client(compiled, limiters=limiters)
    optimizer = optimizer_lm or ModelClient(session.policies(compiled), limiters=limiters)
    return Clients(pipeline, optimizer, model)


def preferred_optimizer_model(name: str) -> str | None:
    """The first installed model of the optimizer's `preferred_optimizer_models` (a method whose
    critic must be more capable than a small pipeline model, e.g. JADE's prompt rounds), or None:
    then `make_clients` uses the spec's first model. An explicit --optimizer-model wins."""
    from flowc.optimizers.registry import get_optimizer
    from flowc.runtime.local_profiles import PROFILES, is_installed

    for model in getattr(get_optimizer(name), "preferred_optimizer_models", ()):
        prof = PROFILES.get(model.removeprefix("local/")) if model.startswith("local/") else None
        if prof is None or is_installed(prof):
            return str(model)
    return None


def optimizer_fields(cls: Any) -> dict[str, dataclasses.Field[Any]]:
    """The constructor fields of an optimizer class (not its ClassVars such as `name`, which
    `__dataclass_fields__` also lists, nor fields that `__init__` does not take)."""
    if not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def settable(cls: Any) -> list[str]:
    """The names `--set` and the spec's `optimize:` block may set: the constructor's own fields,
    not the clients, the private state (`_name`) or the class constants (ClassVar)."""
    if not dataclasses.is_dataclass(cls):
        return []
    return sorted(
        f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_") and f.name not in NOT_SETTABLE
    )


def _no_setting(name: str, key: str, names: Sequence[str], what: str = "", span: Span | None = None) -> FlowcError:
    """Unknown setting `key` of optimizer `name` (`what`: how the user gave it; `span`: where in the spec)."""
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return FlowcError(
        "invalid-value",
        f"{what}optimizer '{name}' has no setting '{key}'",
        span=span,
        hint=f"{hint}settings of {name}: {', '.join(names)}",
    )


def make_optimizer(
    name: str,
    clients: Clients,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    only: Sequence[str] | None = None,
    frozen: Sequence[str] = (),
    resume: bool = False,
    settings: Mapping[str, Any] | None = None,
    progress: ProgressHook | None = None,
) -> Any:
    """The registered optimizer `name` on `clients`. `steps` sets the field `steps` or the fields
    the class names in `step_fields` (TEP: both phase caps); `settings` sets any other field by
    name (typed values; `parse_settings` reads `NAME=VALUE` strings)."""
    from flowc.optimizers.registry import get_optimizer

    cls = get_optimizer(name)
    fields = optimizer_fields(cls)
    kwargs: dict[str, Any] = {"pipeline_lm": clients.pipeline, "only": list(only) if only else None}
    kwargs.update(frozen=list(frozen), resume=resume)
    if "optimizer_lm" in fields:
        kwargs.update(optimizer_lm=clients.optimizer, optimizer_model=clients.optimizer_model)
    if "progress" in fields:
        kwargs["progress"] = progress
    if steps is not None:
        for f in ("steps",) if "steps" in fields else getattr(cls, "step_fields", ()):
            kwargs[f] = steps
    if batch_size is not None and "batch_size" in fields:
        kwargs["batch_size"] = batch_size
    names = settable(cls)
    for key, value in (settings or {}).items():
        if key not in names:
            raise _no_setting(name, key, names)
        kwargs[key] = value
    return cls(**kwargs)


def known_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of `settings` that optimizer `name` has (for a benchmark that gives several
    optimizers one set of options, e.g. `max_tokens` to every method that calls a model)."""
    from flowc.optimizers.registry import get_optimizer

    names = settable(get_optimizer(name))
    return {k: v for k, v in settings.items() if k in names}


def parse_settings(name: str, pairs: Sequence[str]) -> dict[str, Any]:
    """`NAME=VALUE` pairs (`flowc optimize --set`), converted to the type of the field's default."""
    from flowc.optimizers.registry import get_optimizer

    cls = get_optimizer(name)
    fields = optimizer_fields(cls)
    names = settable(cls)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise FlowcError(
                "invalid-value", f"'--set {pair}' is not NAME=VALUE", hint=f"settings of {name}: {', '.join(names)}"
            )
        if key not in names:
            raise _no_setting(name, key, names, f"'--set {pair}': ")
        f = fields[key]
        default: Any = f.default
        factory: Any = f.default_factory
        if default is dataclasses.MISSING and factory is not dataclasses.MISSING:
            default = factory()
        try:
            out[key] = _convert(raw.strip(), default)
        except ValueError:
            raise FlowcError(
                "invalid-value",
                f"'--set {pair}': '{raw}' is not a valid {type(default).__name__} for '{key}'",
                hint=f"e.g. --set {key}={_as_flag(default)} (the default)",
            ) from None
    return out


def spec_settings(name: str, compiled: CompiledPipeline) -> dict[str, Any]:
    """The settings the spec gives optimizer `name` (`optimize: {name: {NAME: VALUE}}`), checked
    against the optimizer's fields like `--set` values (an int where a float is expected is fine).

    Raises:
        FlowcError: `invalid-value` at the setting's place in the spec for an unknown name or a
            value of the wrong type.
    """
    from flowc.optimizers.registry import get_optimizer

    given = compiled.spec.optimize.get(name) or {}
    cls = get_optimizer(name)
    fields = optimizer_fields(cls)
    names = settable(cls)
    out: dict[str, Any] = {}
    for key, value in given.items():
        if key not in names:
            raise _no_setting(name, key, names, span=compiled.spec.key_span("optimize", name, key))
        f = fields[key]
        default: Any = f.default
        factory: Any = f.default_factory
        if default is dataclasses.MISSING and factory is not dataclasses.MISSING:
            default = factory()
        try:
            out[key] = _typed(value, default)
        except ValueError:
            raise FlowcError(
                "invalid-value",
                f"'{key}: {json.dumps(value)}' is not a valid {type(default).__name__} for optimizer '{name}'",
                span=compiled.spec.span("optimize", name, key),
                hint=f"e.g. '{key}: {json.dumps(_plain(default))}' (the default)",
            ) from None
    return out


def _plain(default: Any) -> Any:
    return list(default) if isinstance(default, tuple) else default


def _as_flag(default: Any) -> str:
    """A default as `--set` writes it (a tuple as a comma-separated list)."""
    if isinstance(default, tuple | list):
        return ",".join(str(x) for x in default)
    return str(default).lower() if isinstance(default, bool) else str(default)


def _typed(value: Any, default: Any) -> Any:
    """A spec value (JSON) in the type of the field's default."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ValueError(value)
    if isinstance(default, int | float) and isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(default, int) and not float(value).is_integer():
            raise ValueError(value)
        return type(default)(value)
    if isinstance(default, tuple | list) and isinstance(value, list):
        return tuple(value)
    if isinstance(default, str) and isinstance(value, str):
        return value
    raise ValueError(value)


def _convert(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, tuple | list):
        items = [x.strip() for x in raw.split(",") if x.strip()]
        if default and all(isinstance(x, int | float) and not isinstance(x, bool) for x in default):
            return tuple(float(x) for x in items)
        return tuple(items)
    if default is None and raw.lower() in ("none", "null", ""):
        return None
    if default is None:
        try:
            return int(raw)
        except ValueError:
            return raw
    return raw


__all__ = (
    "NOT_SETTABLE",
    "Clients",
    "known_settings",
    "make_clients",
    "make_optimizer",
    "parse_settings",
    "preferred_optimizer_model",
    "spec_settings",
)
