"""Passage corpora: the documents a `retrieve` node searches.

A corpus is an ordered tuple of `Doc`s with unique ids. It loads from the layouts that real
retrieval data sets ship in, so `../shared/data` and users' files load without conversion:

- JSONL, one record per line (blank lines skipped);
- a JSON list of records (or of `[title, [sentences]]` pairs, HotpotQA's context layout);
- a JSON object: `{title: [sentences]}` (HotpotQA's corpus), `{title: text}`, or `{id: record}`.

A record is an object with a text field and optionally an id and a title. Accepted names:

- id: `id`, `_id`, `doc_id`, `docid`, `pid` (strings or integers). Without one the id is the
  record's 0-based position, so a corpus whose titles repeat (MuSiQue's does) still loads.
- title: `title`.
- text: `text`, `paragraph_text` (MuSiQue), `contents` (FlashRAG: `"Title"` on the first line,
  the text after it), `content`, `passage`, `body`, or `sentences` (a list joined into one text).

Every bad record is a `FlowcError` with code `corpus-invalid` naming the file, the line (JSONL) or
record index (JSON), and what is wrong; a missing file is `corpus-not-found`.

`Corpus.content_hash` is a sha256 over the canonical records in order; retrievers use it (with a
model id) as the key of on-disk embedding caches, so any edit to the corpus invalidates them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from flowc.errors import FlowcError

__all__ = ["Corpus", "Doc", "Hit", "load_corpus"]

ID_FIELDS = ("id", "_id", "doc_id", "docid", "pid")
TEXT_FIELDS = ("text", "paragraph_text", "contents", "content", "passage", "body", "sentences")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Doc:
    """One passage: a stable id, a title (possibly empty) and its text."""

    id: str
    title: str
    text: str

    @property
    def content(self) -> str:
        """Title and text as one string: what retrievers index and encode."""
        return f"{self.title}\n{self.text}" if self.title else self.text

    def to_dict(self) -> dict[str, str]:
        """A plain JSON-able dict (for traces and prompt rendering)."""
        return {"id": self.id, "title": self.title, "text": self.text}


@dataclass(frozen=True)
class Hit:
    """A document returned by a retriever with its score (higher is better)."""

    doc: Doc
    score: float

    def to_dict(self) -> dict[str, str | float]:
        """The doc's fields plus `score`."""
        return {**self.doc.to_dict(), "score": self.score}


class Corpus(Sequence[Doc]):
    """An immutable, ordered collection of documents with unique ids.

    Order matters: retrievers break score ties by position, and the content hash covers it.
    """

    __slots__ = ("_by_id", "_docs", "_hash", "source")

    def __init__(self, docs: Iterable[Doc], *, source: str | None = None) -> None:
        """Build a corpus from documents.

        Args:
            docs: the documents, in order.
            source: where they came from (a path), used in error messages.

        Raises:
            FlowcError: `corpus-invalid` on an empty corpus or a duplicate id.
        """
        self._docs: tuple[Doc, ...] = tuple(docs)
        self.source = source
        where = f"corpus {source}" if source else "corpus"
        if not self._docs:
            raise FlowcError(
                "corpus-invalid",
                f"{where} has no documents",
                hint="give at least one record with a text field",
            )
        self._by_id: dict[str, int] = {}
        for i, d in enumerate(self._docs):
            first = self._by_id.setdefault(d.id, i)
            if first != i:
                raise FlowcError(
                    "corpus-invalid",
                    f"{where}: duplicate document id '{d.id}' (documents {first} and {i})",
                    hint="give every record a unique id, or drop the id field to number records by position",
                )
        self._hash = _hash_docs(self._docs)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], *, source: str | None = None) -> Corpus:
        """Build a corpus from record dicts (see the module docstring for accepted fields).

        Raises:
            FlowcError: `corpus-invalid` naming the record index and what is wrong.
        """
        where = source or "<records>"
        docs = [_record_to_doc(r, i, f"{where}: record {i}") for i, r in enumerate(records)]
        return cls(_check_unique(docs, [f"record {i}" for i in range(len(docs))], where), source=source)

    @property
    def content_hash(self) -> str:
        """sha256 (hex) over the canonical `[id, title, text]` records, in order."""
        return self._hash

    @property
    def docs(self) -> tuple[Doc, ...]:
        """All documents, in order."""
        return self._docs

    def get(self, doc_id: str) -> Doc | None:
        """The document with this id, or None."""
        i = self._by_id.get(doc_id)
        return None if i is None else self._docs[i]

    def index_of(self, doc_id: str) -> int:
        """The position of a document id; raises KeyError if absent."""
        return self._by_id[doc_id]

    def contents(self) -> list[str]:
        """`Doc.content` of every document, in order."""
        return [d.content for d in self._docs]

    def __len__(self) -> int:
        return len(self._docs)

    @overload
    def __getitem__(self, i: int) -> Doc: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Doc]: ...
    def __getitem__(self, i: int | slice) -> Doc | Sequence[Doc]:
        return self._docs[i]

    def __iter__(self) -> Iterator[Doc]:
        return iter(self._docs)

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return f"Corpus({len(self)} docs, hash={self._hash[:12]}{src})"


def load_corpus(path: str | Path) -> Corpus:
    """Load a corpus from a JSONL or JSON file.

    `.jsonl`/`.ndjson` files are read line by line; anything else is parsed as one JSON document,
    falling back to JSONL when the file is not a single JSON value but its first line is.

    Raises:
        FlowcError: `corpus-not-found` if the file does not exist; `corpus-invalid` with the file,
            the line or record, and the problem for anything malformed.
    """
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise FlowcError(
            "corpus-not-found",
            f"corpus file '{p}' {what}",
            hint="check the corpus path in the spec (relative paths resolve against the spec's folder)",
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FlowcError(
            "corpus-invalid",
            f"{p}: not UTF-8 text (byte {e.start})",
            hint="save the corpus as UTF-8 JSON or JSONL",
        ) from e
    if p.suffix.lower() in JSONL_SUFFIXES:
        return _load_jsonl(text, str(p))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        # A `.json` file holding one record per line is common enough to accept.
        if text.lstrip().startswith("{") and _first_line_is_json(text):
            return _load_jsonl(text, str(p))
        raise FlowcError(
            "corpus-invalid",
            f"{p}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}",
            hint="fix the JSON, or use one record per line in a .jsonl file",
        ) from e
    return _load_json_value(data, str(p))


# -- parsing -------------------------------------------------------------------------------------


def _first_line_is_json(text: str) -> bool:
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _load_jsonl(text: str, source: str) -> Corpus:
    docs: list[Doc] = []
    places: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        place = f"{source}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise FlowcError(
                "corpus-invalid",
                f"{place}: invalid JSON at column {e.colno}: {e.msg}",
                hint="each line of a .jsonl corpus must be one JSON object",
            ) from e
        docs.append(_record_to_doc(rec, len(docs), place))
        places.append(f"line {lineno}")
    return Corpus(_check_unique(docs, places, source), source=source)


def _load_json_value(data: Any, source: str) -> Corpus:
    if isinstance(data, list):
        return Corpus.from_records(data, source=source)
    if isinstance(data, dict):
        docs = [_entry_to_doc(k, v, i, f"{source}: entry '{k}'") for i, (k, v) in enumerate(data.items())]
        return Corpus(_check_unique(docs, [f"entry '{k}'" for k in data], source), source=source)
    raise FlowcError(
        "corpus-invalid",
        f"{source}: a corpus must be a JSON list or object, not {type(data).__name__}",
        hint="use a list of {id, title, text} records, or JSONL",
    )


def _entry_to_doc(key: str, value: Any, index: int, place: str) -> Doc:
    """One entry of a JSON-object corpus: the key is the title (and id) unless the value says otherwise."""
    if isinstance(value, str):
        return Doc(id=key, title=key, text=_non_empty(value.strip(), place))
    if isinstance(value, list):
        return Doc(id=key, title=key, text=_non_empty(_join_sentences(value, place), place))
    if isinstance(value, dict):
        rec = dict(value)
        if not any(f in rec for f in ID_FIELDS):
            rec["id"] = key
        return _record_to_doc(rec, index, place)
    raise FlowcError(
        "corpus-invalid",
        f"{place}: the value must be a text, a list of sentences or a record, not {type(value).__name__}",
        hint="write {title: text} or {title: [sentences]}",
    )


def _record_to_doc(rec: Any, index: int, place: str) -> Doc:
    if isinstance(rec, list) and len(rec) == 2 and isinstance(rec[0], str):
        # HotpotQA's own context layout: [title, [sentences]] (or [title, text]).
        title, body = rec
        text = body.strip() if isinstance(body, str) else _join_sentences(body, place)
        return Doc(id=str(index), title=title.strip(), text=_non_empty(text, place))
    if not isinstance(rec, dict):
        raise FlowcError(
            "corpus-invalid",
            f"{place}: a record must be a JSON object, not {type(rec).__name__}",
            hint='write records as {"id": ..., "title": ..., "text": ...}',
        )
    doc_id = _record_id(rec, index, place)
    title = rec.get("title", "")
    if title is None:
        title = ""
    if not isinstance(title, str):
        raise FlowcError(
            "corpus-invalid",
            f"{place}: 'title' must be a string, not {type(title).__name__}",
            hint="make the title a JSON string",
        )
    field = next((f for f in TEXT_FIELDS if f in rec), None)
    if field is None:
        raise FlowcError(
            "corpus-invalid",
            f"{place}: the record has no text field (keys: {', '.join(sorted(rec)) or 'none'})",
            hint=f"add a 'text' field (also accepted: {', '.join(TEXT_FIELDS[1:])})",
        )
    raw = rec[field]
    if field == "sentences" or isinstance(raw, list):
        text = _join_sentences(raw, place)
    elif isinstance(raw, str):
        text = raw.strip()
        if field == "contents" and not title:
            title, text = _split_flashrag(text)
    else:
        raise FlowcError(
            "corpus-invalid",
            f"{place}: '{field}' must be a string, not {type(raw).__name__}",
            hint="make the text a JSON string",
        )
    title = title.strip()
    if not text and not title:
        _non_empty(text, place)
    return Doc(id=doc_id, title=title, text=text)


def _record_id(rec: dict[str, Any], index: int, place: str) -> str:
    for f in ID_FIELDS:
        if f in rec:
            v = rec[f]
            # bool is an int subclass; an id of `true` is almost certainly a mistake.
            if isinstance(v, str) and v.strip():
                return v.strip()
            if isinstance(v, int) and not isinstance(v, bool):
                return str(v)
            raise FlowcError(
                "corpus-invalid",
                f"{place}: '{f}' must be a non-empty string or an integer, not {json.dumps(v)}",
                hint="give each record a unique id, or drop the field to number records by position",
            )
    return str(index)


def _split_flashrag(contents: str) -> tuple[str, str]:
    """FlashRAG's `contents`: `"Title"` (quoted) on the first line, then the text."""
    head, sep, rest = contents.partition("\n")
    if not sep:
        return "", contents
    head = head.strip()
    if len(head) >= 2 and head[0] == head[-1] == '"':
        head = head[1:-1]
    return head.strip(), rest.strip()


def _join_sentences(sentences: Any, place: str) -> str:
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        raise FlowcError(
            "corpus-invalid",
            f"{place}: sentences must be a list of strings",
            hint='write ["First sentence.", " Second sentence."]',
        )
    out = ""
    for s in sentences:
        # HotpotQA keeps each sentence's leading space; other sources do not. Add one only where
        # two sentences would otherwise run together.
        if out and s and not out[-1].isspace() and not s[0].isspace():
            out += " "
        out += s
    return out.strip()


def _non_empty(text: str, place: str) -> str:
    if not text:
        raise FlowcError(
            "corpus-invalid",
            f"{place}: the record has an empty text and no title",
            hint="remove the record or give it some text",
        )
    return text


def _check_unique(docs: list[Doc], places: list[str], source: str) -> list[Doc]:
    """Report a duplicate id with both places (the Corpus constructor only knows positions)."""
    seen: dict[str, int] = {}
    for i, d in enumerate(docs):
        j = seen.setdefault(d.id, i)
        if j != i:
            raise FlowcError(
                "corpus-invalid",
                f"{source}: {places[i]}: duplicate document id '{d.id}' (first at {places[j]})",
                hint="give every record a unique id, or drop the id field to number records by position",
            )
    return docs


def _hash_docs(docs: Sequence[Doc]) -> str:
    h = hashlib.sha256()
    for d in docs:
        # One canonical JSON line per document; the newline cannot occur inside a JSON string.
        h.update(json.dumps([d.id, d.title, d.text], ensure_ascii=False, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()
