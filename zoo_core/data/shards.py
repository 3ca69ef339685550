"""Prepared token shards on disk, and reading them back.

A prepared directory holds `manifest.json` and, per split, shards
`<split>/NNNNN.bin` (tokens, uint16 or uint32) with `<split>/NNNNN.idx`
(uint64 token offsets where each document ends). The manifest records per
shard its tokens, source bytes, documents and sha256.

Checks when a split is opened (`verify`):
* `size`: every shard's and index's size matches the manifest (one stat each:
  instant even for hundreds of GB). Always done.
* `lazy` (default): also the sha256 of each shard, the first time this process
  reads from it. Every token a run reads has been checked; no upfront pass.
* `full`: the sha256 of every shard before training starts.
`zoo data verify DIR` checks everything, sizes and hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from zoo_core.errors import UserError
from zoo_core.interfaces import Tokenizer

MANIFEST = "manifest.json"
FORMAT_VERSION = 2
VERIFY_MODES = ("lazy", "full", "size")
_VERIFIED: set = set()  # (path, size, mtime) whose sha256 matched, in this process


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def default_cache_dir(cache_dir: str | None = None) -> Path:
    root = cache_dir or os.environ.get("ZOO_CACHE") or Path.home() / ".cache" / "zoo"
    return Path(root).expanduser() / "data"


def prepared_dir_for(
    src: str, tokenizer: Tokenizer, val_fraction: float, cache_dir: str | None, text_field: str = "text"
) -> Path:
    """The cache directory for `src` prepared with these settings."""
    from zoo_core.data.corpora import source_files

    files = source_files(src)
    key = hashlib.sha1(
        json.dumps(
            [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
            + [tokenizer.fingerprint, val_fraction, text_field, FORMAT_VERSION]
        ).encode()
    ).hexdigest()[:12]
    label = Path(src).name if src not in ("", ".") else "data"
    return default_cache_dir(cache_dir) / f"{label}-{key}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(prepared: Path) -> dict[str, Any]:
    path = Path(prepared) / MANIFEST
    if not path.exists():
        raise UserError(
            f"'{prepared}' is not a prepared data directory (no {MANIFEST}); run: zoo data prepare SRC --out {prepared}"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"'{path}' is corrupted (not valid JSON); prepare '{prepared}' again") from None
    if manifest.get("format") == 1:  # one file per split, before shards
        for _s, info in manifest["splits"].items():
            info["shards"] = [
                {
                    "file": info["file"],
                    "tokens": info["tokens"],
                    "bytes": info["bytes"],
                    "documents": info["documents"],
                    "sha256": info["sha256"],
                }
            ]
    elif manifest.get("format") != FORMAT_VERSION:
        raise UserError(
            f"'{path}' has format {manifest.get('format')}, this zoo reads {FORMAT_VERSION}; prepare '{prepared}' again"
        )
    return manifest


def check_tokenizer(manifest: dict[str, Any], prepared: Path, tokenizer: Tokenizer) -> None:
    if manifest["tokenizer"] != tokenizer.fingerprint:
        raise UserError(
            f"'{prepared}' was tokenized with '{manifest['tokenizer']}' but the model uses "
            f"'{tokenizer.fingerprint}'; prepare the data again with this tokenizer "
            f"(zoo data prepare SRC --tokenizer ...) or set data.tokenizer to the one it was made with"
        )


class ShardedTokens:
    """The shards of one split as one long read-only token array."""

    def __init__(
        self, root: Path, shards: list[dict[str, Any]], dtype: np.dtype, verify: str = "lazy", max_open: int = 64
    ) -> None:
        if verify not in VERIFY_MODES:
            raise UserError(f"data.source.verify={verify} is not one of {', '.join(VERIFY_MODES)}")
        self.root, self.shards, self.dtype, self.verify = Path(root), shards, np.dtype(dtype), verify
        self.paths = [self.root / sh["file"] for sh in shards]
        for sh, path in zip(shards, self.paths):
            check_size(path, sh["tokens"] * self.dtype.itemsize, self.root)
            if "index" in sh:
                check_size(self.root / sh["index"], sh["documents"] * 8, self.root)
        self.starts = np.concatenate([[0], np.cumsum([sh["tokens"] for sh in shards], dtype=np.int64)])
        #: Whether every shard has its document index (format 1 directories have none).
        self.has_documents = all("index" in sh for sh in shards)
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        self._ends: OrderedDict[int, np.ndarray] = OrderedDict()
        self.max_open = max_open  # each memmap keeps a file descriptor
        if verify == "full":
            for j in range(len(shards)):
                self._check_hash(j)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _check_hash(self, j: int, force: bool = False) -> None:
        path = self.paths[j]
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key in _VERIFIED and not force:
            return
        if sha256_file(path) != self.shards[j]["sha256"]:
            raise UserError(
                f"shard '{path}' is corrupted: its sha256 does not match {MANIFEST}; "
                f"prepare '{self.root}' again (zoo data verify {self.root} checks every shard)"
            )
        _VERIFIED.add(key)

    def shard(self, j: int) -> np.ndarray:
        arr = self._open.get(j)
        if arr is None:
            if self.verify == "lazy":
                self._check_hash(j)
            arr = np.memmap(self.paths[j], dtype=self.dtype, mode="r")
            self._open[j] = arr
            if len(self._open) > self.max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(j)
        return arr

    def read(self, start: int, count: int) -> np.ndarray:
        """Tokens [start, start + count), across shard boundaries."""
        if start < 0 or start + count > len(self):
            raise IndexError(f"tokens [{start}, {start + count}) outside [0, {len(self)})")
        j = int(np.searchsorted(self.starts, start, side="right")) - 1
        parts = []
        while count > 0:
            off = start - int(self.starts[j])
            take = min(count, int(self.starts[j + 1]) - start)
            parts.append(self.shard(j)[off : off + take])
            start, count, j = start + take, count - take, j + 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def document_ends(self, j: int) -> np.ndarray:
        """Token offsets (within shard j) where its documents end."""
        return np.fromfile(self.root / self.shards[j]["index"], dtype=np.uint64)

    def _cached_ends(self, j: int) -> np.ndarray:
        ends = self._ends.get(j)
        if ends is None:
            ends = self._ends[j] = self.document_ends(j).astype(np.int64)
            if len(self._ends) > self.max_open:
                self._ends.popitem(last=False)
        else:
            self._ends.move_to_end(j)
        return ends

    def _starts_shard(self, j: int) -> bool:
        """Whether a document begins at shard j's first token (the split's first token, or the
        shards before it end with a document)."""
        for i in range(j - 1, -1, -1):
            ends = self._cached_ends(i)
            if self.shards[i]["tokens"] or len(ends):
                return bool(len(ends)) and int(ends[-1]) == self.shards[i]["tokens"]
        return True

    def document_starts(self, start: int, count: int) -> np.ndarray:
        """A bool per token of [start, start + count): True where a document begins (the split's
        first token, and each token after a document's end in the index)."""
        if start < 0 or start + count > len(self):
            raise IndexError(f"tokens [{start}, {start + count}) outside [0, {len(self)})")
        out = np.zeros(count, dtype=bool)
        j = int(np.searchsorted(self.starts, start, side="right")) - 1
        pos, stop = start, start + count
        while pos < stop:
            off = pos - int(self.starts[j])
            take = min(stop, int(self.starts[j + 1])) - pos
            if take > 0:
                ends = self._cached_ends(j)
                lo, hi = np.searchsorted(ends, [off, off + take])
                out[ends[lo:hi] - off + (pos - start)] = True  # the token at an end offset begins the next one
                if off == 0 and self._starts_shard(j):
                    out[pos - start] = True
            pos, j = pos + take, j + 1
        return out


def check_size(path: Path, expected: int, prepared: Path) -> None:
    size = path.stat().st_size if path.exists() else None
    if size != expected:
        what = "missing" if size is None else f"truncated or damaged ({size} bytes, the manifest says {expected})"
        raise UserError(f"shard '{path}' is {what}; prepare '{prepared}' again")


def load_split(
    prepared: Path, split: str, tokenizer: Tokenizer, verify: str = "lazy"
) -> tuple[ShardedTokens, dict[str, Any]]:
    """The tokens of one split, after the tokenizer and shard-size checks."""
    manifest = read_manifest(prepared)
    check_tokenizer(manifest, prepared, tokenizer)
    if split not in manifest["splits"]:
        raise UserError(f"'{prepared}' has no '{split}' split (it has: {', '.join(manifest['splits'])})")
    info = manifest["splits"][split]
    return ShardedTokens(Path(prepared), info["shards"], np.dtype(manifest["dtype"]), verify), info


def verify_dir(prepared: Path) -> dict[str, int]:
    """Check every shard's size and sha256 (and every index's); raise on the first bad file."""
    manifest = read_manifest(prepared)
    counts = {"shards": 0, "tokens": 0, "bytes_read": 0}
    for _split, info in manifest["splits"].items():
        tokens = ShardedTokens(Path(prepared), info["shards"], np.dtype(manifest["dtype"]), verify="size")
        for j, sh in enumerate(info["shards"]):
            tokens._check_hash(j, force=True)
            if "index_sha256" in sh and sha256_file(Path(prepared) / sh["index"]) != sh["index_sha256"]:
                raise UserError(
                    f"index '{Path(prepared) / sh['index']}' is corrupted: its sha256 does not match "
                    f"{MANIFEST}; prepare '{prepared}' again"
                )
            counts["shards"] += 1
            counts["bytes_read"] += tokens.paths[j].stat().st_size
        counts["tokens"] += len(tokens)
    return counts
