"""Prepared token shards: `<split>.bin` (memory-mapped uint16/uint32) plus `manifest.json`."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from tqdm import tqdm

from zoo_core.data.corpora import iter_documents, source_files
from zoo_core.errors import UserError
from zoo_core.interfaces import Tokenizer

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def default_cache_dir(cache_dir: Optional[str] = None) -> Path:
    root = cache_dir or os.environ.get("ZOO_CACHE") or Path.home() / ".cache" / "zoo"
    return Path(root).expanduser() / "data"


def prepared_dir_for(src: str, tokenizer: Tokenizer, val_fraction: float, cache_dir: Optional[str]) -> Path:
    files = source_files(src)
    key = hashlib.sha1(json.dumps([[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
                                  + [tokenizer.fingerprint, val_fraction]).encode()).hexdigest()[:12]
    label = Path(src).name if src not in ("", ".") else "data"
    return default_cache_dir(cache_dir) / f"{label}-{key}"


def prepare(src: str, tokenizer: Tokenizer, out: Path, val_fraction: float = 0.05,
            text_field: str = "text", progress: bool = True) -> Path:
    """Tokenize `src` into train/val shards in `out`. Written into a temporary
    directory and renamed, so a crash never leaves a half-prepared corpus."""
    out = Path(out)
    if (out / MANIFEST).exists():
        return out
    files = source_files(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    dtype = token_dtype(tokenizer.vocab_size)
    sep = tokenizer.eos_id
    stats = {s: {"tokens": 0, "bytes": 0, "documents": 0} for s in ("train", "val")}
    handles = {s: (tmp / f"{s}.bin").open("wb") for s in stats}
    total = sum(f.stat().st_size for f in files)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"preparing {Path(src).name}", disable=not progress)
    try:
        for _, text in iter_documents(files, text_field):
            # Hold out the tail of every document: validation sees the same mix of texts.
            cut = len(text) - int(len(text) * val_fraction)
            for split, part in (("train", text[:cut]), ("val", text[cut:])):
                if not part:
                    continue
                ids = tokenizer.encode(part) + ([sep] if sep is not None else [])
                handles[split].write(np.asarray(ids, dtype=dtype).tobytes())
                st = stats[split]
                st["tokens"] += len(ids)
                st["bytes"] += len(part.encode("utf-8"))
                st["documents"] += 1
            bar.update(len(text.encode("utf-8")))
    finally:
        bar.close()
        for h in handles.values():
            h.close()
    manifest = {
        "format": FORMAT_VERSION, "source": str(src), "tokenizer": tokenizer.fingerprint,
        "vocab_size": tokenizer.vocab_size, "dtype": dtype.name, "val_fraction": val_fraction,
        "splits": {s: {**st, "file": f"{s}.bin", "sha256": _sha256(tmp / f"{s}.bin")} for s, st in stats.items()},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    try:
        tmp.rename(out)
    except OSError:  # another rank finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_split(prepared: Path, split: str, tokenizer: Tokenizer) -> tuple[np.ndarray, Dict[str, Any]]:
    manifest_path = Path(prepared) / MANIFEST
    if not manifest_path.exists():
        raise UserError(f"'{prepared}' is not a prepared data directory (no {MANIFEST}); "
                        f"run: zoo data prepare SRC --out {prepared}")
    manifest = json.loads(manifest_path.read_text())
    if manifest["tokenizer"] != tokenizer.fingerprint:
        raise UserError(f"'{prepared}' was tokenized with '{manifest['tokenizer']}' but the model uses "
                        f"'{tokenizer.fingerprint}'; prepare the data again with this tokenizer")
    info = manifest["splits"][split]
    path = Path(prepared) / info["file"]
    dtype = np.dtype(manifest["dtype"])
    expected = info["tokens"] * dtype.itemsize
    if not path.exists() or path.stat().st_size != expected:
        size = path.stat().st_size if path.exists() else 0
        raise UserError(f"shard '{path}' is truncated or missing ({size} bytes, expected {expected}); "
                        f"delete '{prepared}' and prepare it again")
    return np.memmap(path, dtype=dtype, mode="r"), info
