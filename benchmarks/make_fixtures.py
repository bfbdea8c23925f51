"""Derive the small data fixtures shipped in `pipelines/data/` from `../shared/data/`.

    .venv/bin/python benchmarks/make_fixtures.py [--data ../shared/data] [--out pipelines/data]

Writes, deterministically (same input files → byte-identical output):

- `tiny_wiki.jsonl`: every context paragraph (distractors included) of the questions below, one
  `{id, title, text}` record per distinct title, id = the Wikipedia title.
- `tiny_qa.jsonl`: 20 HotpotQA questions `{id, question, answer, type, supporting_titles}`, chosen
  in file order from RPT's `dev.jsonl` sample for being easy to check: a short answer (≤ 3 words)
  that occurs verbatim (after SQuAD normalisation) in a supporting paragraph, or yes/no; a question
  of at most 20 words; at most 4 comparison questions with a named answer and at most 2 yes/no.
- `tiny_pubmedqa.jsonl`: 10 PubMedQA PQA-L test questions `{id, pubmed_id, question, context,
  answer}` (4 yes, 4 no, 2 maybe), the ones with the shortest abstracts, so prompts stay small.

Provenance and licenses: `pipelines/data/SOURCE.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowc.runtime.metrics import normalize_answer  # noqa: E402

N_QUESTIONS = 20
MAX_COMPARISON = 4  # comparisons whose answer is a name or a date
MAX_YES_NO = 2
MAX_ANSWER_WORDS = 3
MAX_QUESTION_WORDS = 20
PUBMEDQA_QUOTA = {"yes": 4, "no": 4, "maybe": 2}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def paragraphs(row: dict[str, Any]) -> dict[str, str]:
    """title -> paragraph text of one HotpotQA (HuggingFace layout) row."""
    ctx = row["context"]
    return {t: "".join(s).strip() for t, s in zip(ctx["title"], ctx["sentences"], strict=True)}


def is_easy(row: dict[str, Any]) -> bool:
    answer = normalize_answer(row["answer"])
    if not answer or len(row["answer"].split()) > MAX_ANSWER_WORDS:
        return False
    if len(row["question"].split()) > MAX_QUESTION_WORDS:
        return False
    if answer in ("yes", "no"):
        return True
    paras = paragraphs(row)
    gold = set(row["supporting_facts"]["title"])
    return any(answer in normalize_answer(paras[t]) for t in gold if t in paras)


def hotpot_fixtures(data: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = read_jsonl(data / "hotpotqa" / "dev.jsonl")
    chosen: list[dict[str, Any]] = []
    quota = {"comparison": MAX_COMPARISON, "yes/no": MAX_YES_NO}
    for row in rows:
        if len(chosen) == N_QUESTIONS:
            break
        kind = "yes/no" if row["answer"].lower() in ("yes", "no") else row["type"]
        if not is_easy(row) or quota.get(kind, 1) <= 0:
            continue
        if kind in quota:
            quota[kind] -= 1
        chosen.append(row)
    corpus: dict[str, str] = {}
    for row in chosen:
        for title, text in paragraphs(row).items():
            corpus.setdefault(title, text)
    docs = [{"id": t, "title": t, "text": x} for t, x in corpus.items() if x]
    qa = [
        {
            "id": r["id"],
            "question": r["question"].strip(),
            "answer": r["answer"],
            "type": r["type"],
            # Keep order, drop repeats: supporting_facts lists a title once per sentence.
            "supporting_titles": list(dict.fromkeys(r["supporting_facts"]["title"])),
        }
        for r in chosen
    ]
    return docs, qa


def pubmedqa_fixture(data: Path) -> list[dict[str, Any]]:
    rows = read_jsonl(data / "pubmedqa" / "combined_PubMedQA_test.jsonl")
    rows.sort(key=lambda r: (len(" ".join(r["context"])), r["index"]))
    left = dict(PUBMEDQA_QUOTA)
    out: list[dict[str, Any]] = []
    for r in rows:
        label = r["groundtruth"]
        if left.get(label, 0) > 0:
            left[label] -= 1
            out.append(
                {
                    "id": r["index"],
                    "pubmed_id": r["key"],
                    "question": r["question"],
                    "context": "\n".join(c.strip() for c in r["context"]),
                    "answer": label,
                }
            )
    out.sort(key=lambda r: int(r["id"].rsplit("_", 1)[1]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "pipelines" / "data")
    args = ap.parse_args(argv)
    if not (args.data / "hotpotqa").is_dir():
        print(f"skipped: {args.data} has no hotpotqa/ folder", file=sys.stderr)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    docs, qa = hotpot_fixtures(args.data)
    for name, recs in (
        ("tiny_wiki.jsonl", docs),
        ("tiny_qa.jsonl", qa),
        ("tiny_pubmedqa.jsonl", pubmedqa_fixture(args.data)),
    ):
        path = args.out / name
        n = write_jsonl(path, recs)
        print(f"{path}: {n} records, {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
