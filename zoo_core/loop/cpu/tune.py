"""CPU choices that depend on the hardware, decided by a short measurement and cached on disk.

What is fast on one x86 CPU is slow on another: oneDNN's fp32 linear beats
MKL's on an AMD EPYC and loses to it on an Intel Xeon with AVX-512 (see
benchmarks/results/peers-train-*.md). So the choice is not a rule about
vendors but a timing of both candidates at the shape in question, made once
and kept in a JSON file keyed by what can change the answer: the CPU model,
its SIMD/matrix flags, the torch version and the thread count.

The file is `$ZOO_CACHE/cpu-tune.json` (default `$XDG_CACHE_HOME/zoo`, else
`~/.cache/zoo`); `ZOO_CPU_TUNE=path` names another file. Deleting it makes
the next run measure again.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

#: The flags that decide which kernels a CPU library can use.
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8", "avx_vnni")
#: Raised when what is measured changes, so that older files are measured again (2: the linear
#: weight gradient's third form, aten's mm).
VERSION = 2

_memory: dict[str, dict[str, Any]] = {}  # this process's view of the file, per section


def cpu_info() -> dict[str, Any]:
    """CPU model name and which of FLAGS it has (Linux /proc/cpuinfo; elsewhere the platform's name)."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    name = name or platform.processor() or "unknown cpu"
    return {"model": name, "flags": [f for f in FLAGS if f in flags]}


def has_bf16_units(info: dict[str, Any] | None = None) -> bool:
    """AMX or AVX512-BF16: the CPU multiplies bf16 natively (else bf16 is converted to fp32 and back)."""
    flags = (info or cpu_info())["flags"]
    return "amx_bf16" in flags or "avx512_bf16" in flags


def machine_key() -> str:
    info = cpu_info()
    return (
        f"{info['model']} | {' '.join(info['flags']) or 'no listed flags'} | torch {torch.__version__} "
        f"| {torch.get_num_threads()} threads"
    )


def cache_path() -> Path:
    explicit = os.environ.get("ZOO_CPU_TUNE")
    if explicit:
        return Path(explicit)
    root = os.environ.get("ZOO_CACHE") or (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zoo")
    return Path(root) / "cpu-tune.json"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("version") == VERSION else {}


def _section_key(section: str) -> str:
    return f"{machine_key()} :: {section}"


def lookup(section: str, key: str) -> Any | None:
    """The cached value for this machine, or None."""
    sk = _section_key(section)
    if sk not in _memory:
        _memory[sk] = dict(_read_file(cache_path()).get("entries", {}).get(sk, {}))
    return _memory[sk].get(key)


def store(section: str, key: str, value: Any) -> None:
    """Keep a value in this process and in the file (read-modify-write, replaced atomically)."""
    sk = _section_key(section)
    _memory.setdefault(sk, {})[key] = value
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_file(path) or {"version": VERSION, "entries": {}}
        data.setdefault("entries", {}).setdefault(sk, {})[key] = value
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cpu-tune.", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:  # a read-only home: the choice still holds for this process
        pass


def cached(section: str, key: str, measure: Callable[[], Any]) -> Any:
    value = lookup(section, key)
    if value is None:
        value = measure()
        store(section, key, value)
    return value


def forget() -> None:
    """Drop this process's copy (tests; after the file changed)."""
    _memory.clear()


def paired_medians(
    candidates: dict[str, Callable[[], Any]],
    rounds: int = 7,
    budget_s: float = 0.5,
    min_rounds: int = 3,
    reducer: Callable[[list[float]], float] = statistics.median,
) -> dict[str, float]:
    """Median (or `reducer`) seconds of each candidate, timed in interleaved rounds (A, B, A, B, ...).

    One untimed call of each first. Interleaving puts a slow spell of a shared
    machine on every candidate alike; the budget caps the timing at big shapes.
    """
    for fn in candidates.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    start = time.perf_counter()
    for r in range(rounds):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        if r + 1 >= min_rounds and time.perf_counter() - start > budget_s:
            break
    return {name: reducer(ts) for name, ts in times.items()}


def describe(info: dict[str, Any] | None = None) -> str:
    info = info or cpu_info()
    return f"{info['model']} ({', '.join(info['flags']) or 'none of ' + '/'.join(FLAGS)})"


def shape_key(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)
