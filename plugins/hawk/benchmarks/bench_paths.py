"""Time the three paths of Hawk: RG-LRU scan (fast), step loop, naive loop.

    python plugins/hawk/benchmarks/bench_paths.py [--batch 4 --seq 256 --dim 64 --threads 1]

Forward + backward of one mixer, median over repeats. Reports wall time and the
process CPU time (steadier than wall time on a shared machine).
"""

import argparse
import statistics
import time

import torch

from zoo_core.testing.build import step_through
from zoo_hawk import Hawk, HawkConfig
from zoo_hawk.reference import naive_hawk


def timed(fn, x, repeats):
    walls, cpus = [], []
    for _ in range(repeats + 1):  # the first run warms up
        w, c = time.perf_counter(), time.process_time()
        fn(x).sum().backward()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls[1:]) * 1e3, statistics.median(cpus[1:]) * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = Hawk(a.dim, HawkConfig())
    x = torch.randn(a.batch, a.seq, a.dim, requires_grad=True)
    print(
        f"fwd+bwd, B={a.batch} T={a.seq} dim={a.dim} (RNN width {m.hidden}), {a.threads} thread(s); "
        f"median ms wall / cpu"
    )
    print(f"{'mixer':10s} {'scan':>15s} {'step loop':>15s} {'naive loop':>15s}")
    cols = [
        timed(lambda x: m(x)[0], x, a.repeats),
        timed(lambda x: step_through(m, x, m.init_state(x.shape[0]))[0], x, a.repeats),
        timed(lambda x: naive_hawk(m, x), x, a.repeats),
    ]
    print(f"{'hawk':10s} " + " ".join(f"{w:7.1f} / {c:5.1f}" for w, c in cols))


if __name__ == "__main__":
    main()
