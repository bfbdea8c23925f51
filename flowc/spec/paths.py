"""Which files a spec may make flowc read: the files of its project, and what the user allows.

A spec is untrusted input: a corpus, an import or an adapter path could name `/etc/passwd`,
`~/.ssh/id_rsa` or `../../other-project/secrets.jsonl`, and a corpus's text goes into prompts
sent to a model. So every path a spec names is resolved (symlinks followed, `..` collapsed) and
must land inside the spec's *project root* or inside a folder the user allowed on the command
line (`--allow-path DIR`) or in Python (`flowc.compile(..., allow_paths=[...])`).

The project root of a spec is the nearest folder, from the spec's own folder upwards, that holds a
`flowc.toml` file or a `.git` entry (a repository or a worktree); a spec in no such folder has its
own folder as its root. A spec given as text (no file) uses the current directory in its place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

PROJECT_MARKERS = ("flowc.toml", ".git")

_allowed: ContextVar[tuple[Path, ...]] = ContextVar("flowc_allowed_paths", default=())


def project_root(folder: Path) -> Path:
    """The nearest folder from `folder` upwards with a `flowc.toml` or `.git`, else `folder`."""
    start = folder.resolve()
    for candidate in (start, *start.parents):
        if any((candidate / marker).exists() for marker in PROJECT_MARKERS):
            return candidate
    return start


@contextmanager
def allowing(paths: Iterable[str | Path]) -> Iterator[None]:
    """Let specs read files under `paths` (besides their project) for the duration of the block."""
    extra = tuple(Path(p).expanduser().resolve() for p in paths)
    token = _allowed.set(_allowed.get() + extra)
    try:
        yield
    finally:
        _allowed.reset(token)


def allowed_paths() -> tuple[Path, ...]:
    """The folders allowed besides each spec's project, in this context."""
    return _allowed.get()


@dataclass(frozen=True)
class SpecPath:
    """A path a spec names, resolved: where it leads and whether the spec may read it."""

    written: str
    resolved: Path
    root: Path

    @property
    def allowed(self) -> bool:
        return any(self.resolved.is_relative_to(d) for d in (self.root, *allowed_paths()))

    def outside_message(self, what: str) -> str:
        """`corpus 'wiki' reads '/etc/passwd', outside the project /home/me/qa`."""
        shown = f"'{self.written}'" if str(self.resolved) == self.written else f"'{self.written}' ({self.resolved})"
        return f"{what} reads {shown}, which is outside the project {self.root}"

    def outside_hint(self) -> str:
        folder = self.resolved.parent
        return (
            f"copy the file into the project, or allow its folder: --allow-path {folder} "
            "(the project is the nearest folder with flowc.toml or .git, else the spec's folder)"
        )


def spec_path(written: str, base_dir: Path) -> SpecPath:
    """Resolve `written` (relative to the spec's folder `base_dir`, or absolute) for checking."""
    resolved = (base_dir / written).resolve()  # as the readers join it: no ~ expansion
    return SpecPath(written, resolved, project_root(base_dir))
