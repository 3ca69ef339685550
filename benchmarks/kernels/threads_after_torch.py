"""A compiled kernel's time right after one of PyTorch's parallel ops: its jobs on PyTorch's
OpenMP threads (the library built with -fopenmp, as cbuild.py builds it now) against jobs on
threads of its own (the pthread build, what cbuild.py built before). Both libraries are built
here from the same sources and loaded side by side; the kernel is zoo_glu's backward at the
MLP shape of benchmarks/peers (2048 x 704, float32).

    python benchmarks/kernels/threads_after_torch.py [--out benchmarks/results/kernel-threads-<machine>.md]
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import shutil
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch

from zoo_kernels import cbuild
from zoo_kernels.glu import cpu as glu_cpu

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "peers"))
import common  # noqa: E402  (benchmarks/peers/common.py: the machine line every result carries)


def build(flags: list[str], tmp: Path, name: str) -> ctypes.CDLL:
    package = resources.files("zoo_kernels")
    for rel in cbuild.HEADERS + cbuild.SOURCES:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(package.joinpath(rel).read_text())
    out = tmp / f"{name}.so"
    cc = shutil.which("cc") or shutil.which("gcc")
    err = cbuild._compile(cc, flags, [tmp / s for s in cbuild.SOURCES], tmp, out)
    if err:
        sys.exit(f"build {name} failed: {err}")
    return ctypes.CDLL(str(out))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.manual_seed(0)
    h, dy = torch.randn(2048, 1408), torch.randn(2048, 704)
    dh = torch.empty_like(h)
    a, w = torch.randn(2048, 256), torch.randn(704, 256)
    with tempfile.TemporaryDirectory() as tmp:
        libs = {"OpenMP (PyTorch's threads)": build(cbuild.FLAGS, Path(tmp), "omp")}
        libs["pthreads (own threads)"] = build(cbuild.NATIVE_FLAGS, Path(tmp) / "p", "pthread")
        calls = {}
        for label, lib in libs.items():
            fn = lib.zoo_glu
            kinds = {"int": ctypes.c_int, "i64": ctypes.c_int64, "ptr": ctypes.c_void_p}
            kinds["i64*"] = ctypes.POINTER(ctypes.c_int64)
            fn.argtypes = [kinds[k] for k, _ in glu_cpu.SIGNATURE.params()]
            st = (ctypes.c_int64 * 6)(1408, 1408, 704, 0, 1408, 1408)
            ptrs = (h.data_ptr(), h[:, 704:].data_ptr(), dy.data_ptr(), None, dh.data_ptr(), dh[:, 704:].data_ptr())
            calls[label] = lambda fn=fn, st=st, ptrs=ptrs: fn(1, 0, 0, *ptrs, 2048, 704, st, torch.get_num_threads())
        befores = {"alone": None, "after torch.mm": lambda: torch.mm(a, w.t()), "after torch add": lambda: a.add(1)}
        times = {(k, b): [] for k in calls for b in befores}
        for _ in range(args.rounds):  # interleaved: a slow spell lands on every variant alike
            for (k, b), ts in times.items():
                if befores[b]:
                    befores[b]()
                t0 = time.perf_counter()
                calls[k]()
                ts.append(time.perf_counter() - t0)
    lines = [
        "# A C kernel right after a PyTorch op: its jobs on PyTorch's OpenMP threads or on its own",
        "",
        f"Command: `python benchmarks/kernels/threads_after_torch.py --rounds {args.rounds}`",
        "",
        common.machine_line(),
        f"Threads: {torch.get_num_threads()}; Python {platform.python_version()}.",
        "",
        "zoo_glu backward (SiLU), 2048 x 704 float32, median ms over interleaved rounds:",
        "",
        "| jobs on | " + " | ".join(befores) + " |",
        "|---|" + "---|" * len(befores),
    ]
    for k in calls:
        lines.append(f"| {k} | " + " | ".join(f"{1e3 * statistics.median(times[(k, b)]):.3f}" for b in befores) + " |")
    common.print_lines(lines, args.out)


if __name__ == "__main__":
    main()
