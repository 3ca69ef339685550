"""`zoo data prepare`: text, jsonl and parquet into memory-mapped token shards.

The corpus is cut into *pieces* of about `shard_mb` MB of source (whole small
files packed together, big files split at newlines, parquet by row group).
Each piece is tokenized by one worker, which streams it block by block and
writes its own shard per split (`train/00012.bin` tokens + `train/00012.idx`
document ends). So:

* output is the same for any number of workers (a shard is named by its piece);
* memory is bounded by the block size, never by the corpus;
* an interrupted run resumes: `DIR.partial/progress.jsonl` lists finished
  pieces, and a rerun skips them;
* the manifest is written last and `DIR.partial` renamed to `DIR`, so a
  directory with a manifest is always complete.

Validation split: a text file gives its last `val_fraction` of bytes (every
book is seen in both splits); each jsonl line or parquet row goes wholly to
validation when a hash of (file, position) falls below `val_fraction`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import shutil
import zlib
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from zoo_core.data.corpora import (
    align,
    char_boundary,
    iter_jsonl_range,
    iter_parquet_rows,
    kind_of,
    parquet_file,
    read_text_range,
    source_files,
    source_root,
)
from zoo_core.data.shards import FORMAT_VERSION, MANIFEST, token_dtype
from zoo_core.errors import UserError
from zoo_core.interfaces import Tokenizer

SPLITS = ("train", "val")
PROGRESS, PLAN = "progress.jsonl", "plan.json"


# -- planning ------------------------------------------------------------------------------------


def describe_files(src: str, val_fraction: float) -> list[dict[str, Any]]:
    files = source_files(src)
    root = source_root(src, files)
    out = []
    for f in files:
        kind = kind_of(f)
        info: dict[str, Any] = {"path": str(f.resolve()), "kind": kind, "size": f.stat().st_size}
        try:
            info["rel"] = str(f.relative_to(root))
        except ValueError:
            info["rel"] = f.name
        if kind == "text":  # the validation tail starts at a character boundary
            size = info["size"]
            cut = size - int(size * val_fraction)
            with f.open("rb") as fh:
                fh.seek(max(cut - 1, 0))
                window = fh.read(8)
            info["cut"] = cut if cut in (0, size) else max(cut - 1, 0) + char_boundary(window, 1 if cut else 0)
        elif kind == "parquet":
            meta = parquet_file(f).metadata
            info["groups"] = [meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)]
        out.append(info)
    return out


def plan_pieces(files: list[dict[str, Any]], piece_bytes: int) -> list[dict[str, Any]]:
    """Pack the files into pieces of about `piece_bytes`: [file index, start, stop] segments."""
    pieces: list[dict[str, Any]] = []
    cur: list[list[int]] = []
    size_of_cur = 0

    def add(fi: int, start: int, stop: int, nbytes: int) -> None:
        nonlocal cur, size_of_cur
        if cur and cur[-1][0] == fi and cur[-1][2] == start:
            cur[-1][2] = stop
        else:
            cur.append([fi, start, stop])
        size_of_cur += nbytes
        if size_of_cur >= piece_bytes:
            flush()

    def flush() -> None:
        nonlocal cur, size_of_cur
        if cur:
            pieces.append({"index": len(pieces), "segments": cur, "bytes": size_of_cur})
        cur, size_of_cur = [], 0

    for fi, f in enumerate(files):
        if f["kind"] == "parquet":
            for g, nbytes in enumerate(f["groups"]):
                add(fi, g, g + 1, nbytes)
            continue
        pos, size = 0, f["size"]
        with open(f["path"], "rb") as fh:
            while pos < size:
                room = max(piece_bytes - size_of_cur, 1)
                if size - pos <= room:
                    end = size
                elif f["kind"] == "jsonl":  # jsonl splits only between lines
                    fh.seek(pos + room - 1)
                    end = min(pos + room - 1 + len(fh.readline()), size)
                else:
                    end = align(fh, pos + room, size)
                add(fi, pos, end, end - pos)
                pos = end
    flush()
    return pieces


# -- one piece, in a worker -----------------------------------------------------------------------


class ShardWriter:
    """Appends tokens to `<name>.bin.tmp`, hashing as it goes; `close` writes the
    document ends to `<name>.idx` and renames the shard into place."""

    def __init__(self, root: Path, rel: str, dtype: np.dtype) -> None:
        self.root, self.rel, self.dtype = root, rel, dtype
        self.fh = None
        self.sha = hashlib.sha256()
        self.tokens = self.bytes = 0
        self.ends = array("Q")

    def add(self, ids: np.ndarray, nbytes: int) -> None:
        if self.fh is None:
            (self.root / self.rel).parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(self.root / (self.rel + ".tmp"), "wb")
        data = np.ascontiguousarray(ids, dtype=self.dtype).tobytes()
        self.fh.write(data)
        self.sha.update(data)
        self.tokens += len(ids)
        self.bytes += nbytes

    def end_document(self, eos: int | None) -> None:
        if eos is not None:
            self.add(np.array([eos]), 0)
        self.ends.append(self.tokens)

    def close(self) -> dict[str, Any] | None:
        if self.fh is None:
            return None
        self.fh.close()
        index = self.rel[: -len(".bin")] + ".idx"
        ends = np.asarray(self.ends, dtype=np.uint64).tobytes()
        (self.root / index).write_bytes(ends)
        (self.root / (self.rel + ".tmp")).replace(self.root / self.rel)
        return {
            "file": self.rel,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "documents": len(self.ends),
            "sha256": self.sha.hexdigest(),
            "index": index,
            "index_sha256": hashlib.sha256(ends).hexdigest(),
        }


_W: dict[str, Any] = {}  # per-process job settings, set once per worker


def _init_worker(job: dict[str, Any]) -> None:
    _W.clear()
    _W.update(job)
    tok = job["tokenizer"]
    _W["encode"] = getattr(tok, "encode_array", None) or (lambda text: np.asarray(tok.encode(text), dtype=np.int64))


def is_val(rel: str, key: str, val_fraction: float) -> bool:
    return zlib.crc32(f"{rel}:{key}".encode()) < val_fraction * 2**32


def _documents(piece: dict[str, Any]) -> Iterator[tuple]:
    """(split, text or None) in order; None ends the current document of that split."""
    files, frac, field = _W["files"], _W["val_fraction"], _W["text_field"]
    for fi, start, stop in piece["segments"]:
        f = files[fi]
        path = Path(f["path"])
        if f["kind"] == "text":
            cut, size = f["cut"], f["size"]
            for split, lo, hi, ends in (
                ("train", start, min(stop, cut), start < cut <= stop),
                ("val", max(start, cut), stop, stop == size and cut < size),
            ):
                if lo < hi:
                    for block in read_text_range(path, lo, hi):
                        yield split, block
                if ends:
                    yield split, None
        else:
            rows = (
                iter_jsonl_range(path, start, stop, field)
                if f["kind"] == "jsonl"
                else iter_parquet_rows(path, start, stop, field)
            )
            for key, text in rows:
                if text:
                    split = "val" if is_val(f["rel"], str(key), frac) else "train"
                    yield split, text
                    yield split, None


def tokenize_piece(piece: dict[str, Any]) -> dict[str, Any]:
    name = f"{piece['index']:05d}.bin"
    writers = {s: ShardWriter(_W["root"], f"{s}/{name}", _W["dtype"]) for s in SPLITS}
    encode, eos = _W["encode"], _W["eos"]
    for split, text in _documents(piece):
        if text is None:
            writers[split].end_document(eos)
        else:
            writers[split].add(encode(text), len(text.encode("utf-8")))
    return {"piece": piece["index"], "shards": {s: w.close() for s, w in writers.items()}}


# -- the driver ------------------------------------------------------------------------------------


def _done_pieces(work: Path) -> dict[int, dict[str, Any]]:
    done = {}
    path = work / PROGRESS
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # the line being written when the run stopped
            continue
        intact = all(
            sh is None
            or (
                (work / sh["file"]).exists()
                and (work / sh["file"]).stat().st_size == sh["tokens"] * np.dtype(rec["dtype"]).itemsize
            )
            for sh in rec["shards"].values()
        )
        if intact:
            done[rec["piece"]] = rec
    return done


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare(
    src: str,
    tokenizer: Tokenizer,
    out: Path,
    val_fraction: float = 0.05,
    text_field: str = "text",
    progress: bool = True,
    workers: int = 1,
    shard_mb: float = 64.0,
    on_piece: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Tokenize `src` into `out`; returns `out`. `on_piece` is called after each finished piece."""
    out = Path(out).expanduser()
    if (out / MANIFEST).exists():
        return out
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction={val_fraction} must be in [0, 1); 0.05 holds out 5%")
    if shard_mb <= 0:
        raise UserError(f"shard_mb={shard_mb} must be positive (MB of source text per shard)")
    if out.exists() and any(out.iterdir()):
        raise UserError(
            f"'{out}' exists and is not a prepared data directory (no {MANIFEST}); choose a new --out or delete it"
        )
    work = out.with_name(out.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    with _locked(work / "lock"):
        if (out / MANIFEST).exists():  # another process finished it while we waited
            shutil.rmtree(work, ignore_errors=True)
            return out
        return _prepare_locked(
            src,
            tokenizer,
            out,
            work,
            val_fraction,
            text_field,
            progress,
            max(int(workers), 1),
            int(shard_mb * 2**20),
            on_piece,
        )


def _prepare_locked(src, tokenizer, out, work, val_fraction, text_field, progress, workers, piece_bytes, on_piece):
    files = describe_files(src, val_fraction)
    pieces = plan_pieces(files, piece_bytes)
    dtype = token_dtype(tokenizer.vocab_size)
    plan = {
        "format": FORMAT_VERSION,
        "tokenizer": tokenizer.fingerprint,
        "val_fraction": val_fraction,
        "text_field": text_field,
        "files": files,
        "pieces": pieces,
    }
    key = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()
    plan_path = work / PLAN
    if plan_path.exists() and json.loads(plan_path.read_text())["key"] != key:
        raise UserError(
            f"'{work}' holds an interrupted prepare of other files or options; "
            f"delete it to start over, or rerun with the same source, tokenizer and options"
        )
    plan_path.write_text(json.dumps({"key": key, "source": str(src)}))
    done = _done_pieces(work)
    todo = [p for p in pieces if p["index"] not in done]
    job = {
        "tokenizer": tokenizer,
        "files": files,
        "root": work,
        "dtype": dtype,
        "eos": tokenizer.eos_id,
        "text_field": text_field,
        "val_fraction": val_fraction,
    }
    bar = tqdm(
        total=sum(p["bytes"] for p in pieces),
        initial=sum(p["bytes"] for p in pieces if p["index"] in done),
        unit="B",
        unit_scale=True,
        desc=f"preparing {Path(str(src)).name}",
        disable=not progress,
    )
    by_index = {p["index"]: p for p in pieces}
    with (work / PROGRESS).open("a") as log, _pool(workers, job) as imap:
        for rec in imap(tokenize_piece, todo):
            rec["dtype"] = dtype.name
            log.write(json.dumps(rec) + "\n")
            log.flush()
            done[rec["piece"]] = rec
            bar.update(by_index[rec["piece"]]["bytes"])
            if on_piece is not None:
                on_piece(rec)
    bar.close()
    _finish(src, tokenizer, out, work, files, pieces, done, dtype, val_fraction, text_field)
    return out


@contextlib.contextmanager
def _pool(workers: int, job: dict[str, Any]):
    if workers == 1:
        _init_worker(job)
        yield map
        return
    # fork: workers start at once and inherit the tokenizer; nothing in them touches torch.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        yield lambda fn, items: pool.imap_unordered(fn, items, chunksize=1)


def _finish(src, tokenizer, out, work, files, pieces, done, dtype, val_fraction, text_field) -> None:
    splits = {}
    for s in SPLITS:
        shards = [done[p["index"]]["shards"][s] for p in pieces if done[p["index"]]["shards"][s]]
        splits[s] = {
            "tokens": sum(sh["tokens"] for sh in shards),
            "bytes": sum(sh["bytes"] for sh in shards),
            "documents": sum(sh["documents"] for sh in shards),
            "shards": shards,
        }
    manifest = {
        "format": FORMAT_VERSION,
        "source": str(src),
        "tokenizer": tokenizer.fingerprint,
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "text_field": text_field,
        "source_files": len(files),
        "source_bytes": sum(f["size"] for f in files),
        "splits": splits,
    }
    for name in (PROGRESS, PLAN):
        (work / name).unlink(missing_ok=True)
    (work / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if out.exists():
        out.rmdir()  # empty: checked before starting
    work.rename(out)
    (out / "lock").unlink(missing_ok=True)
