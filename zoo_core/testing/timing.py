"""Timing a mixer's three paths (fast forward, step loop, naive reference) on CPU, for the
plugins' `benchmarks/bench_paths.py` scripts:

    from zoo_core.testing.timing import bench_paths
    bench_paths({"hawk": lambda dim: Hawk(dim, HawkConfig())}, naive_hawk)

Forward + backward of one mixer, median over repeats. Reports wall time and the process CPU
time (steadier than wall time on a shared machine). Nothing here is a check: it prints.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from zoo_core.testing.build import step_through


def timed(fn: Callable[[Tensor], Tensor], x: Tensor, repeats: int) -> tuple[float, float]:
    """Median (wall ms, CPU ms) of `fn(x).sum().backward()` over `repeats` runs after one warm-up."""
    walls, cpus = [], []
    for _ in range(repeats + 1):  # the first run warms up
        w, c = time.perf_counter(), time.process_time()
        fn(x).sum().backward()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls[1:]) * 1e3, statistics.median(cpus[1:]) * 1e3


def path_times(m: nn.Module, x: Tensor, naive: Callable[[nn.Module, Tensor], Tensor], repeats: int) -> list:
    """`timed` for the mixer's forward, its `step` loop from `init_state` and `naive(m, x)`."""
    return [
        timed(lambda x: m(x)[0], x, repeats),
        timed(lambda x: step_through(m, x, m.init_state(x.shape[0]))[0], x, repeats),
        timed(lambda x: naive(m, x), x, repeats),
    ]


def bench_paths(
    mixers: Mapping[str, Callable[[int], nn.Module]],
    naive: Callable[[nn.Module, Tensor], Tensor],
    argv: Sequence[str] | None = None,
) -> None:
    """Print `path_times` for each mixer (`name: build(dim)`), with --batch --seq --dim
    --repeats --threads read from `argv` (default: the command line)."""
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    width = max([10, *map(len, mixers)])
    print(f"fwd+bwd, B={a.batch} T={a.seq} dim={a.dim}, {a.threads} thread(s); median ms wall / cpu")
    print(f"{'mixer':{width}s} {'scan':>15s} {'step loop':>15s} {'naive loop':>15s}")
    for name, build in mixers.items():
        torch.manual_seed(0)
        m = build(a.dim)
        x = torch.randn(a.batch, a.seq, a.dim, requires_grad=True)
        cols = path_times(m, x, naive, a.repeats)
        print(f"{name:{width}s} " + " ".join(f"{w:7.1f} / {c:5.1f}" for w, c in cols))
