"""Generated corpora for tests and benchmarks: pseudo-words with punctuation,
newlines and some non-ASCII text, written as text, jsonl and parquet files."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

EXTRA = ["café", "naïve", "Größe", "漢字", "かな", "🙂", "—", "“quoted”"]


def vocabulary(rng: random.Random, n: int = 400, letters: str = "abcdefghijklmnopqrstuvwxyz") -> list[str]:
    return ["".join(rng.choice(letters) for _ in range(rng.randint(1, 8))) for _ in range(n)] + EXTRA


def random_text(rng: random.Random, n_bytes: int, words: Sequence[str]) -> str:
    """About n_bytes of UTF-8: sentences of Zipf-ish words, lines and paragraphs."""
    out, size = [], 0
    while size < n_bytes:
        w = words[min(int(rng.paretovariate(1.2)) - 1, len(words) - 1)] if rng.random() < 0.8 else rng.choice(words)
        sep = rng.choices([" ", ", ", ". ", "\n", "\n\n"], [80, 6, 8, 5, 1])[0]
        piece = w + sep
        out.append(piece)
        size += len(piece.encode("utf-8"))
    return "".join(out)


def write_corpus(
    root: Path,
    n_bytes: int,
    kinds: Sequence[str] = ("text", "jsonl", "parquet"),
    seed: int = 0,
    files_per_kind: int = 2,
    letters: str = "abcdefghijklmnopqrstuvwxyz",
) -> Path:
    """A directory of about n_bytes of text spread over text, jsonl and parquet files."""
    rng = random.Random(seed)
    words = vocabulary(rng, letters=letters)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    per_file = max(n_bytes // (len(kinds) * files_per_kind), 1)
    for kind in kinds:
        for i in range(files_per_kind):
            if kind == "text":
                (root / f"book{i}.txt").write_text(random_text(rng, per_file, words), encoding="utf-8")
                continue
            docs = []
            while sum(len(d) for d in docs) < per_file:
                docs.append(random_text(rng, rng.randint(20, max(per_file // 8, 40)), words))
            if kind == "jsonl":
                with (root / f"web{i}.jsonl").open("w", encoding="utf-8") as fh:
                    for d in docs:
                        fh.write(json.dumps({"id": len(d), "text": d}, ensure_ascii=False) + "\n")
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(
                    pa.table({"text": docs}), root / f"rows{i}.parquet", row_group_size=max(len(docs) // 3, 1)
                )
    return root


def write_big_text(root: Path, n_bytes: int, file_bytes: int = 64 << 20, seed: int = 0) -> Path:
    """n_bytes of text in files of file_bytes, generated block by block (never held whole)."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    block = random_text(rng, 1 << 20, words)  # repeated with a varying prefix: cheap to generate at GB scale
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written, i = 0, 0
    while written < n_bytes:
        with (root / f"part{i:04d}.txt").open("w", encoding="utf-8") as fh:
            size = 0
            while size < file_bytes and written + size < n_bytes:
                chunk = f"{rng.choice(words)} {size}\n" + block
                fh.write(chunk)
                size += len(chunk.encode("utf-8"))
        written += size
        i += 1
    return root
