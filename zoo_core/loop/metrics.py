"""metrics.jsonl, plus the registered trackers (`register_trackers`: the core's TensorBoard
and wandb, offline works) as mirrors.

Each optimizer-step record holds step, loss, accuracy, grad_norm, lr,
tokens_per_s, tokens_seen, peak_mem_mb (CUDA: max allocated; CPU: max RSS) and mfu
(where the peak is known: zoo_core/loop/hardware.device_peak);
validation records hold val_* keys. Every record also carries `time` (UTC, ISO-8601 to the
second, e.g. "2026-12-06T17:50:01Z") and `elapsed_s` (wall-clock seconds since the run first
started; a resumed run goes on from the checkpoint's). Only rank 0 writes.

A tracker that raises while starting or logging is dropped with one line,
`zoo: warning: tracker NAME stopped: REASON`, and the run goes on with the others.

Progress (`progress_bar`, `log_line`): on a terminal, tqdm bars on stderr; off a terminal
(a Slurm log, `> log.txt`), plain timestamped lines on stdout and no carriage returns.

Exactly one record per logged step: `open(step)` cuts every log we own back to
the checkpoint's step before the run goes on (a torn last line, from a crash
or a full disk, is dropped with a one-line warning), and each tracker is told that step
(TensorBoard purges its events past it).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

#: Keys every record gets; they are not sent to the trackers (which keep their own clocks).
CLOCK_KEYS = ("time", "elapsed_s")


def records(run_dir: str | Path, key: str) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl that hold `key`, in order ([] without the file). A line
    that does not parse (the torn last line of a run killed mid-write, which the run itself cuts
    when it resumes) is passed over."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if f'"{key}"' not in line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if key in record:
            out.append(record)
    return out


def utc_now() -> str:
    """The wall-clock time as metrics.jsonl and the log lines write it: 2026-12-06T17:50:01Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: float) -> str:
    """1m12s, 2h05m, 45s: how the log lines write elapsed and ETA."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def on_terminal(stream: Any = None) -> bool:
    """Whether `stream` (default stderr, where the bars draw) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced by something without isatty
        return False


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on a terminal only: off one (a Slurm log, a pipe) it is disabled, so no
    carriage returns reach the log; the caller writes `log_line`s there instead."""
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not (enabled and on_terminal()), **kwargs)


def lines_wanted(enabled: bool = True) -> bool:
    """Whether plain log lines are written: whenever stdout is not a terminal (a Slurm log,
    `> log.txt`), whatever the bars do; `enabled` is the caller's own switch (rank 0 only)."""
    return enabled and not on_terminal(sys.stdout)


def log_line(text: str) -> None:
    """One timestamped line on stdout, flushed (a Slurm log shows it at once)."""
    print(f"{utc_now()} {text}", flush=True)


def step_line(step: int, total: int, record: dict[str, Any], elapsed: float, eta: float | None) -> str:
    """`step 120/800 loss 2.134 lr 3.0e-03 tok/s 12,345 mfu 8.1% elapsed 1m12s eta 6m40s`."""
    parts = [f"step {step}/{total}"]
    if "loss" in record:
        parts.append(f"loss {record['loss']:.3f}")
    if "lr" in record:
        parts.append(f"lr {record['lr']:.1e}")
    if "tokens_per_s" in record:
        parts.append(f"tok/s {record['tokens_per_s']:,.0f}")
    if "mfu" in record:
        parts.append(f"mfu {100 * record['mfu']:.1f}%")
    parts.append(f"elapsed {duration(elapsed)}")
    if eta is not None:
        parts.append(f"eta {duration(eta)}")
    return " ".join(parts)


def _wanted_trackers(cfg: Any) -> list[tuple[str, type]]:
    """The registered trackers this run asks for (in name order), with their names."""
    from zoo_core.registry import get_registry

    return [(e.name, e.factory) for e in get_registry().entries("trackers") if e.factory.wanted(cfg)]


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())  # one line, whatever the library wrote
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


class MetricsLog:
    def __init__(self, run_dir: Path, cfg: Any, enabled: bool, started: float | None = None) -> None:
        """Checks that the trackers asked for are installed; writes nothing until `open`.
        `started` (time.perf_counter()) is when this process began the run; default now."""
        self.enabled, self.cfg, self.run_dir = enabled, cfg, Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.trackers: list[tuple[str, Any]] = []
        self.started = time.perf_counter() if started is None else started
        self.elapsed_before = 0.0  # seconds the run had used before this process (a resume)
        self._tracker_classes = [] if not enabled else _wanted_trackers(cfg)
        for _, cls in self._tracker_classes:  # a missing library is one line, before any training
            cls.check(cfg)

    def elapsed(self) -> float:
        """Wall-clock seconds since the run first started (over every resume)."""
        return self.elapsed_before + time.perf_counter() - self.started

    def open(self, step: int, elapsed_before: float | None = None) -> None:
        """Start logging after `step` (the checkpoint resumed from, 0 for a fresh start).
        `elapsed_before`: the run's seconds at that checkpoint; None reads it from the last
        record kept (0 for a fresh start)."""
        if elapsed_before is not None:
            self.elapsed_before = float(elapsed_before)
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        last = self.truncate_after(step)
        if elapsed_before is None:
            self.elapsed_before = float(last.get("elapsed_s", 0.0)) if step and last else 0.0
        self.trackers = []
        for name, cls in self._tracker_classes:
            try:
                self.trackers.append((name, cls(self.run_dir, self.cfg, step)))
            except Exception as exc:  # a tracker is a mirror: the run goes on without it
                _stopped(name, exc)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in record.items()}
        clean["time"], clean["elapsed_s"] = utc_now(), round(self.elapsed(), 3)
        with self.path.open("a") as fh:  # one write per line: a crash tears at most the last one
            fh.write(json.dumps(clean) + "\n")
        step = clean.get("step", 0)
        numbers = {
            k: v
            for k, v in clean.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step" and k not in CLOCK_KEYS
        }
        for name, tracker in list(self.trackers):
            try:
                tracker.log(numbers, step)
            except Exception as exc:
                self._drop(name, tracker, exc)

    def close(self) -> None:
        """Flush and close every tracker that has a `close` (the run's end; safe to call twice)."""
        for name, tracker in list(self.trackers):
            try:
                close = getattr(tracker, "close", None)
                if close is not None:
                    close()
            except Exception as exc:
                _stopped(name, exc)
        self.trackers = []

    def _drop(self, name: str, tracker: Any, exc: BaseException) -> None:
        _stopped(name, exc)
        self.trackers = [(n, t) for n, t in self.trackers if t is not tracker]
        try:
            close = getattr(tracker, "close", None)
            if close is not None:
                close()
        except Exception:
            pass  # already reported as stopped

    def truncate_after(self, step: int) -> dict[str, Any]:
        """Drop records past `step` so the log reads as one run; rewritten atomically.
        Returns the last record kept ({} if none)."""
        if not self.enabled or not self.path.exists():
            return {}
        kept, torn = [], []
        last: dict[str, Any] = {}
        lines = self.path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError
            except ValueError:
                torn.append(i + 1)
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
                last = record
        if torn:
            where = "its last line" if torn == [len(lines)] else f"line(s) {', '.join(map(str, torn[:5]))}"
            warnings.warn(
                f"{self.path}: dropped {where}, which was not a whole JSON record "
                f"(a crash or a full disk in the middle of a write)",
                stacklevel=2,
            )
        if len(kept) == len(lines):
            return last  # nothing to change: leave the file as it is
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
        return last


def _stopped(name: str, exc: BaseException) -> None:
    print(f"zoo: warning: tracker {name} stopped: {_reason(exc)}", file=sys.stderr, flush=True)
