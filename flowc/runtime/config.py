"""Settings of a run, passed explicitly (no global state)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int = Field(500, ge=1, description="node firings per run before it is stopped as runaway")
    map_concurrency: int = Field(4, ge=1, description="branches of one map running at once")
    repair: bool = Field(True, description="ask the model once to fix a reply that cannot be read")
    cache_dir: Path | None = Field(None, description="embedding caches; None: ~/.cache/flowc")
