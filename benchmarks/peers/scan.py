"""The first-order scan h_t = a_t * h_{t-1} + x_t: zoo's CPU path against the peers.

    python benchmarks/peers/scan.py                       # T = 1K, 4K, 16K; writes benchmarks/results/
    python benchmarks/peers/scan.py --lengths 1024 --no-write

Shape (batch 8, channels 256, T), fp32. Each implementation gets its inputs in
its own layout, made before the clock starts: zoo (B, T, D), accelerated-scan
(B, C, T) contiguous. Compared, forward and forward + backward:

- zoo: `zoo_kernels.linear_scan` on CPU (what the mixers call);
- zoo chunked torch: the same op with the compiled kernel switched off
  (ZOO_KERNELS_CPP=0), when the compiled kernel is in use;
- a Python loop over time (h = a_t * h + x_t over unbind(1), then stack), autograd through it;
- accelerated-scan's torch reference (`accelerated_scan.ref.scan`, a
  Blelloch-style tree in PyTorch ops), autograd through it;
- Heinsen's log-space scan as mingru-pytorch implements it
  (`heinsen_associative_scan_log`: cumsum + logcumsumexp, then exp), fed
  log a and log x (x > 0 here so the logs exist), against zoo's
  `log_linear_scan` (+ exp) on the same inputs;
- a memory floor: ops that move the same bytes as the scan into freshly
  allocated outputs, as every implementation here allocates its own
  (forward: read a and x, write h, 12 B/element: torch.add(a, x);
  backward: read g, a, h, write dx and da: torch.mul(g, h) and torch.add(g, a),
  24 B/element).

Warm-up first, then the median of repeated calls; threads pinned. Freed memory
is kept for reuse (zoo_core.cpu_memory, what `zoo train` does on CPU) for every
row alike; --glibc-default measures with glibc's own allocator thresholds, under
which each fresh tensor over 32 MiB (T >= 4K here) is page-faulted in again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="*", default=[1024, 4096, 16384])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--budget", type=float, default=20.0, help="seconds of timed calls per entry (>= 3 calls)")
    p.add_argument("--loop-max", type=int, default=16384, help="longest T for the Python loop")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-write", action="store_true")
    p.add_argument(
        "--glibc-default",
        action="store_true",
        help="leave glibc's allocator thresholds alone (fresh big tensors are page-faulted in)",
    )
    args = p.parse_args()
    common.pin_threads(args.threads)
    if not args.glibc_default:
        from zoo_core.cpu_memory import keep_freed_memory

        args.freed_memory = "kept for reuse (zoo_core.cpu_memory)" if not keep_freed_memory() else "glibc default"
    else:
        args.freed_memory = "glibc default (--glibc-default)"
    import torch

    import zoo_kernels

    try:
        from accelerated_scan.ref import scan as acc_scan
    except Exception as exc:  # report, don't drop
        acc_scan, acc_err = None, f"{type(exc).__name__}: {exc}"
    try:
        from minGRU_pytorch.minGRU import heinsen_associative_scan_log
    except Exception as exc:
        heinsen_associative_scan_log, heinsen_err = None, f"{type(exc).__name__}: {exc}"

    cpp = _cpp_state()
    load_before = common.load()
    print(f"load average before: {load_before}; threads {torch.get_num_threads()}; compiled kernel: {cpp}", flush=True)
    B, D = args.batch, args.channels
    rows = []  # (T, name, fwd ms, fwd+bwd ms, bytes fwd, bytes fwdbwd)

    def bench(fn, inputs, g, backward):
        def call():
            leaves = [t.detach().requires_grad_() if backward else t for t in inputs]
            out = fn(*leaves)
            if backward:
                out.backward(g)

        times = common.time_steps(call, args.warmup, args.repeats, args.budget)
        return 1e3 * common.median(times)

    for T in args.lengths:
        gen = torch.Generator().manual_seed(T)
        a = torch.rand(B, T, D, generator=gen) * 0.5 + 0.5  # decays in (0.5, 1)
        x = torch.rand(B, T, D, generator=gen) + 0.1  # positive, so log x exists
        grad = torch.randn(B, T, D, generator=gen)
        a_ct, x_ct = a.transpose(1, 2).contiguous(), x.transpose(1, 2).contiguous()
        log_a, log_x = a.log(), x.log()
        out = torch.rand_like(x)  # stands for h in the backward floor
        n = B * T * D

        entries = []

        # zoo
        def zoo(a_, x_):
            return zoo_kernels.linear_scan(a_, x_)[0]

        entries.append(("zoo linear_scan (CPU path)", zoo, (a, x), grad))
        if cpp == "compiled":

            def zoo_chunked(a_, x_):
                return _without_cpp(lambda: zoo_kernels.linear_scan(a_, x_, None, backend="torch")[0])

            entries.append(("zoo chunked torch (ZOO_KERNELS_CPP=0)", zoo_chunked, (a, x), grad))

        # Python loop
        def loop(a_, x_):
            # unbind, not a_[:, t]: indexing's backward would write a full-size zero gradient per step
            h = torch.zeros_like(x_[:, 0])
            hs = []
            for at, xt in zip(a_.unbind(1), x_.unbind(1)):
                h = at * h + xt
                hs.append(h)
            return torch.stack(hs, 1)

        if T <= args.loop_max:
            entries.append(("Python loop over time", loop, (a, x), grad))

        # accelerated-scan reference
        if acc_scan is not None:
            entries.append(
                ("accelerated-scan ref.scan (B, C, T)", acc_scan, (a_ct, x_ct), grad.transpose(1, 2).contiguous())
            )
        else:
            rows.append((T, f"accelerated-scan ref: n/a ({acc_err})", None, None))

        # log space: zoo vs Heinsen (mingru-pytorch)
        def zoo_log(la, lx):
            return zoo_kernels.log_linear_scan(la, lx)[0].exp()

        entries.append(("zoo log_linear_scan + exp", zoo_log, (log_a, log_x), grad))
        if heinsen_associative_scan_log is not None:
            entries.append(("Heinsen log scan (mingru-pytorch)", heinsen_associative_scan_log, (log_a, log_x), grad))
        else:
            rows.append((T, f"Heinsen (mingru-pytorch): n/a ({heinsen_err})", None, None))

        for name, fn, inputs, g in entries:
            fwd = bench(fn, inputs, g, False)
            fb = bench(fn, inputs, g, True)
            rows.append((T, name, fwd, fb))
            print(f"T={T:6d} {name:42s} fwd {fwd:9.2f} ms  fwd+bwd {fb:9.2f} ms", flush=True)

        # memory floor: the same bytes moved, into freshly allocated outputs as every scan above does
        def floor_fwd():
            torch.add(a, x)  # reads a, x; writes h

        def floor_bwd():
            torch.mul(grad, out)  # reads g, h; writes da
            torch.add(grad, a)  # reads g, a; writes dx

        f = 1e3 * common.median(common.time_steps(floor_fwd, args.warmup, args.repeats, args.budget))
        b = 1e3 * common.median(common.time_steps(floor_bwd, args.warmup, args.repeats, args.budget))
        rows.append((T, "memory floor (same bytes)", f, f + b))
        print(
            f"T={T:6d} {'memory floor':42s} fwd {f:9.2f} ms  fwd+bwd {f + b:9.2f} ms ({12 * n / f / 1e6:.1f} GB/s fwd)",
            flush=True,
        )

    load_after = common.load()
    text = report(rows, args, load_before, load_after, cpp, B, D)
    print(text)
    if not args.no_write:
        common.write_report(text, args.out, "scan")


def _cpp_state() -> str:
    try:
        from zoo_kernels import cbuild
    except ImportError:
        return "not in this zoo-kernels"
    return "compiled" if cbuild.available() else f"unavailable ({cbuild.why_unavailable()})"


def _without_cpp(fn):
    old = os.environ.get("ZOO_KERNELS_CPP")
    os.environ["ZOO_KERNELS_CPP"] = "0"
    try:
        return fn()
    finally:
        if old is None:
            del os.environ["ZOO_KERNELS_CPP"]
        else:
            os.environ["ZOO_KERNELS_CPP"] = old


def report(rows, args, load_before, load_after, cpp, B, D) -> str:
    lines = [
        f"# First-order scan: zoo's CPU path against the peers ({common.machine_slug()})",
        "",
        common.machine_line(),
        f"Threads pinned: torch.set_num_threads({args.threads}). Load average (1/5/15 min) before: "
        f"{load_before}; after: {load_after}. zoo's compiled CPU kernel: {cpp}. Freed memory: {args.freed_memory}.",
        "",
        f"Command: `{common.command_line()}`. h_t = a_t h_(t-1) + x_t at (batch {B}, channels {D}, T), "
        f"fp32, h0 = 0; {args.warmup} warm-up calls, then the median of up to {args.repeats} calls (fewer past "
        f"{args.budget:.0f} s). Forward+backward = the op and its backward for a given output gradient "
        "(autograd for the loop and the peers). Ratios are (other time) / (zoo time): > 1 means zoo is faster; "
        "for the floor, (zoo time) / (floor time): how far zoo is from moving the bytes once.",
        "",
        "| T | implementation | forward ms | fwd+bwd ms | forward: x zoo | fwd+bwd: x zoo |",
        "|---|---|---|---|---|---|",
    ]
    zoo = {T: (f, b) for T, name, f, b in rows if name.startswith("zoo linear_scan")}
    zoo_log = {T: (f, b) for T, name, f, b in rows if name.startswith("zoo log_linear_scan")}
    for T, name, f, b in rows:
        if f is None:
            lines.append(f"| {T} | {name} | | | | |")
            continue
        ref = zoo_log.get(T) if ("Heinsen" in name or "log_linear" in name) else zoo.get(T)
        if name.startswith("memory floor"):
            rf = f"zoo / floor = {zoo[T][0] / f:.2f}" if T in zoo else ""
            rb = f"zoo / floor = {zoo[T][1] / b:.2f}" if T in zoo else ""
        elif name.startswith("zoo linear_scan") or name.startswith("zoo log_linear"):
            rf = rb = "1"
        else:
            rf = f"{f / ref[0]:.1f}x" if ref else ""
            rb = f"{b / ref[1]:.1f}x" if ref else ""
        lines.append(f"| {T} | {name} | {f:.2f} | {b:.2f} | {rf} | {rb} |")
    lines += [
        "",
        "Log-space rows are compared with zoo's log_linear_scan; the other rows with zoo's linear_scan.",
        "Memory floor bandwidth (forward, 12 B/element): "
        + ", ".join(
            f"T={T}: {12 * B * T * D / f / 1e6:.1f} GB/s" for T, name, f, b in rows if name.startswith("memory floor")
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
