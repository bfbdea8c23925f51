"""Corpus loading: every accepted layout, the content hash, and typed errors with file and line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from flowc.errors import FlowcError
from flowc.runtime.corpus import Corpus, Doc, Hit, load_corpus

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, name: str, content: str) -> Path:
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    return p


def jsonl(*records: object) -> str:
    return "\n".join(json.dumps(r) for r in records) + "\n"


def test_jsonl_with_ids_titles_and_blank_lines(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "c.jsonl",
        jsonl({"id": "a", "title": "Alpha", "text": " First. "}, {"id": 7, "text": "No title."}) + "\n\n",
    )
    c = load_corpus(p)
    assert [d.id for d in c] == ["a", "7"]
    assert c[0] == Doc("a", "Alpha", "First.")
    assert c[1].title == "" and c[1].content == "No title."
    assert c[0].content == "Alpha\nFirst."
    assert c.get("7") is c[1] and c.get("nope") is None and c.index_of("a") == 0
    assert len(c) == 2 and c.source == str(p)


def test_json_list_without_ids_numbers_by_position(tmp_path: Path) -> None:
    # MuSiQue's corpus repeats titles, so titles cannot be ids.
    recs = [{"title": "T", "text": "one"}, {"title": "T", "text": "two"}]
    c = load_corpus(write(tmp_path, "c.json", json.dumps(recs)))
    assert [(d.id, d.title, d.text) for d in c] == [("0", "T", "one"), ("1", "T", "two")]


def test_json_object_of_sentences_joins_them(tmp_path: Path) -> None:
    data = {"Alû": ["Alû is a demon.", " It lurks."], "Other": ["No", "space."], "Plain": "Just text."}
    c = load_corpus(write(tmp_path, "c.json", json.dumps(data)))
    assert c[0] == Doc("Alû", "Alû", "Alû is a demon. It lurks.")
    assert c[1].text == "No space."
    assert c[2] == Doc("Plain", "Plain", "Just text.")


def test_json_list_of_title_sentence_pairs(tmp_path: Path) -> None:
    data = [["Alû", ["Alû is a demon.", " It lurks."]], ["Other", "Plain text."]]
    c = load_corpus(write(tmp_path, "c.json", json.dumps(data)))
    assert list(c) == [Doc("0", "Alû", "Alû is a demon. It lurks."), Doc("1", "Other", "Plain text.")]


def test_json_object_of_records_uses_key_as_default_id(tmp_path: Path) -> None:
    data = {"k1": {"title": "A", "text": "x"}, "k2": {"id": "own", "text": "y"}}
    c = load_corpus(write(tmp_path, "c.json", json.dumps(data)))
    assert [d.id for d in c] == ["k1", "own"]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"id": "1", "contents": '"Evan Morris"\nEvan Morris was a lobbyist.'},
            ("Evan Morris", "Evan Morris was a lobbyist."),
        ),
        ({"id": "1", "contents": "no title line"}, ("", "no title line")),
        ({"id": "1", "title": "T", "contents": "T\nbody"}, ("T", "T\nbody")),
        ({"_id": "1", "title": "T", "paragraph_text": "p"}, ("T", "p")),
        ({"doc_id": "1", "sentences": ["a.", "b."]}, ("", "a. b.")),
        ({"pid": 1, "title": None, "passage": "p"}, ("", "p")),
    ],
)
def test_text_field_variants(tmp_path: Path, record: dict[str, object], expected: tuple[str, str]) -> None:
    c = load_corpus(write(tmp_path, "c.jsonl", jsonl(record)))
    assert (c[0].title, c[0].text) == expected
    assert c[0].id == "1"


def test_json_file_with_one_record_per_line_is_accepted(tmp_path: Path) -> None:
    c = load_corpus(write(tmp_path, "c.json", jsonl({"text": "a"}, {"text": "b"})))
    assert [d.text for d in c] == ["a", "b"]


def test_content_hash_is_canonical_and_order_sensitive(tmp_path: Path) -> None:
    a = load_corpus(write(tmp_path, "a.jsonl", jsonl({"id": "x", "title": "T", "text": "t"}, {"id": "y", "text": "u"})))
    same = load_corpus(write(tmp_path, "b.json", json.dumps({"x": {"title": "T", "text": "t"}, "y": "u"})))
    # The dict form gives doc y the title "y", so its hash must differ; the records form must not.
    records = Corpus.from_records([{"id": "x", "title": "T", "text": "t"}, {"id": "y", "text": "u"}])
    assert a.content_hash == records.content_hash
    assert a.content_hash != same.content_hash
    swapped = Corpus([a[1], a[0]])
    assert swapped.content_hash != a.content_hash
    edited = Corpus([a[0], Doc("y", "", "u!")])
    assert edited.content_hash != a.content_hash
    assert len(a.content_hash) == 64


def test_missing_file_is_corpus_not_found(tmp_path: Path) -> None:
    with pytest.raises(FlowcError) as e:
        load_corpus(tmp_path / "nope.jsonl")
    assert e.value.code == "corpus-not-found"
    assert "nope.jsonl" in str(e.value) and e.value.hint
    with pytest.raises(FlowcError) as e:
        load_corpus(tmp_path)
    assert e.value.code == "corpus-not-found" and "directory" in str(e.value)


@pytest.mark.parametrize(
    ("content", "where", "what"),
    [
        (jsonl({"id": "a", "text": "x"}) + "{not json\n", ":2:", "invalid JSON"),
        (jsonl({"id": "a", "text": "x"}, {"id": "b"}), ":2:", "no text field"),
        ("\n" + jsonl({"id": "a", "text": "x"}, {"id": "a", "text": "y"}), "line 3", "duplicate document id 'a'"),
        (jsonl({"id": "a", "text": "x"}, [1, 2]), ":2:", "must be a JSON object"),
        (jsonl({"id": "", "text": "x"}), ":1:", "'id' must be a non-empty string"),
        (jsonl({"id": True, "text": "x"}), ":1:", "'id' must be"),
        (jsonl({"id": "a", "title": 3, "text": "x"}), ":1:", "'title' must be a string"),
        (jsonl({"id": "a", "text": 3}), ":1:", "'text' must be a string"),
        (jsonl({"id": "a", "text": "  "}), ":1:", "empty text and no title"),
        (jsonl({"id": "a", "sentences": ["ok", 2]}), ":1:", "list of strings"),
    ],
)
def test_bad_jsonl_records_name_file_and_line(tmp_path: Path, content: str, where: str, what: str) -> None:
    p = write(tmp_path, "bad.jsonl", content)
    with pytest.raises(FlowcError) as e:
        load_corpus(p)
    msg = str(e.value)
    assert e.value.code == "corpus-invalid"
    assert str(p) in msg and where in msg and what in msg, msg
    assert e.value.hint


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ('[{"text": "a"}, {"title": "b"}]', "record 1: the record has no text field"),
        (
            '[{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]',
            "record 1: duplicate document id 'x' (first at record 0)",
        ),
        ('{"t": 5}', "entry 't': the value must be"),
        ('"just a string"', "must be a JSON list or object"),
        ("[]", "has no documents"),
        ('[{"text": "a"},\n  {"text": }]', ":2:"),
    ],
)
def test_bad_json_names_record(tmp_path: Path, content: str, what: str) -> None:
    p = write(tmp_path, "bad.json", content)
    with pytest.raises(FlowcError) as e:
        load_corpus(p)
    assert e.value.code == "corpus-invalid"
    assert what in str(e.value), str(e.value)


def test_non_utf8_file(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(FlowcError) as e:
        load_corpus(p)
    assert e.value.code == "corpus-invalid" and "UTF-8" in str(e.value)


def test_docs_are_frozen_and_hits_serialise() -> None:
    d = Doc("a", "T", "x")
    with pytest.raises(AttributeError):
        d.text = "y"  # type: ignore[misc]
    assert Hit(d, 1.5).to_dict() == {"id": "a", "title": "T", "text": "x", "score": 1.5}


def test_shipped_fixture_loads() -> None:
    c = load_corpus(REPO / "pipelines" / "data" / "tiny_wiki.jsonl")
    assert 150 <= len(c) <= 300
    assert all(d.title and d.text for d in c)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
@pytest.mark.parametrize(
    ("path", "count", "first_title"),
    [
        ("hotpotqa/hotpotqa_train_corpus.json", 994, "Demon Dice"),
        ("musique/musique_train_corpus.json", 1890, "Journal of Mathematical Physics"),
        ("2wikimultihopqa/2wikimultihopqa_corpus.json", 6119, "Teutberga"),
        ("wiki_corpus_flashrag/sample_data.jsonl", 1000, "Evan Morris"),
    ],
)
def test_real_corpora_load(path: str, count: int, first_title: str) -> None:
    c = load_corpus(SHARED / path)
    assert len(c) == count
    assert c[0].title == first_title and c[0].text


def test_fixture_questions_are_answerable_from_the_fixture_corpus() -> None:
    corpus = load_corpus(REPO / "pipelines" / "data" / "tiny_wiki.jsonl")
    qa = [json.loads(line) for line in (REPO / "pipelines" / "data" / "tiny_qa.jsonl").read_text().splitlines()]
    assert len(qa) == 20 and len({q["id"] for q in qa}) == 20
    for q in qa:
        assert q["question"] and q["answer"] and len(q["supporting_titles"]) == 2
        assert all(corpus.get(t) is not None for t in q["supporting_titles"]), q["id"]
    pubmed = [
        json.loads(line) for line in (REPO / "pipelines" / "data" / "tiny_pubmedqa.jsonl").read_text().splitlines()
    ]
    assert len(pubmed) == 10 and {r["answer"] for r in pubmed} == {"yes", "no", "maybe"}
    assert all(r["question"] and r["context"] for r in pubmed)
    assert (REPO / "pipelines" / "data" / "tiny_wiki.jsonl").stat().st_size < 300_000


@pytest.mark.skipif(not (SHARED / "hotpotqa").is_dir(), reason="../shared/data is absent")
def test_fixtures_are_reproducible_from_shared_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import make_fixtures
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert make_fixtures.main(["--data", str(SHARED), "--out", str(tmp_path)]) == 0
    for name in ("tiny_wiki.jsonl", "tiny_qa.jsonl", "tiny_pubmedqa.jsonl"):
        assert (tmp_path / name).read_bytes() == (REPO / "pipelines" / "data" / name).read_bytes(), name
