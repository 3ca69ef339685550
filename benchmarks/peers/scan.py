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
  24 B/element), timed in interleaved rounds with zoo's op so that both meet the same
  caches; zoo / floor is the median of the rounds' ratios.

Warm-up first, then the median of repeated calls; threads pinned. Freed memory
is kept for reuse (zoo_core.cpu_memory, what `zoo train` does on CPU) for every
row alike; --glibc-default measures with glibc's own allocator thresholds, under
which each fresh tensor over 32 MiB (T >= 4K here) is page-faulted in again.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
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
    p.add_argument("--floor-rounds", type=int, default=30, help="interleaved rounds of zoo and the floor")
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

        # memory floor: the same bytes moved, into freshly allocated outputs as every scan above does.
        # Timed in the same rounds as zoo's op, interleaved: one after the other, each would find the
        # caches as only its own calls leave them (at T = 1K the floor's 24 MiB stays in a 32 MiB L3
        # across its calls, zoo's forward + backward working set does not).
        def floor_fwd():
            torch.add(a, x)  # reads a, x; writes h

        def floor_fwd_bwd():
            floor_fwd()
            torch.mul(grad, out)  # reads g, h; writes da
            torch.add(grad, a)  # reads g, a; writes dx

        def zoo_step(backward):
            leaves = [t.detach().requires_grad_() if backward else t for t in (a, x)]
            h = zoo_kernels.linear_scan(*leaves)[0]
            if backward:
                h.backward(grad)

        calls = {
            "zoo fwd": lambda: zoo_step(False),
            "floor fwd": floor_fwd,
            "zoo fwd+bwd": lambda: zoo_step(True),
            "floor fwd+bwd": floor_fwd_bwd,
        }
        paired, faults = _interleaved(calls, args.warmup, max(args.repeats, args.floor_rounds), args.budget)
        fault_note = ", ".join(f"{k} {common.median(v):.0f}" for k, v in faults.items())
        f, b = (1e3 * common.median(paired[k]) for k in ("floor fwd", "floor fwd+bwd"))
        ratios = tuple(
            common.median([z / fl for z, fl in zip(paired[f"zoo {k}"], paired[f"floor {k}"])])
            for k in ("fwd", "fwd+bwd")
        )
        rows.append((T, "memory floor (same bytes)", f, b, ratios, fault_note))
        print(
            f"T={T:6d} {'memory floor':42s} fwd {f:9.2f} ms  fwd+bwd {b:9.2f} ms ({12 * n / f / 1e6:.1f} GB/s fwd); "
            f"zoo / floor {ratios[0]:.2f} / {ratios[1]:.2f}; page faults per call: {fault_note}",
            flush=True,
        )

    load_after = common.load()
    text = report(rows, args, load_before, load_after, cpp, B, D)
    print(text)
    if not args.no_write:
        common.write_report(text, args.out, "scan")


def _interleaved(calls: dict, warmup: int, rounds: int, budget_s: float) -> tuple[dict, dict]:
    """Seconds per call of each of `calls`, one call of each per round in turn, the order rotating;
    up to `rounds` rounds, fewer once `budget_s` has passed (at least 3). Also the minor page faults per call
    (getrusage): the kernel mapping in freshly allocated memory."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times, faults = {k: [] for k in calls}, {k: [] for k in calls}
    start = time.perf_counter()
    order = list(calls)
    for r in range(rounds):
        for k in order[r % len(order) :] + order[: r % len(order)]:  # rotated: no call always follows the same one
            fn = calls[k]
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
            faults[k].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        if r >= 2 and time.perf_counter() - start > budget_s:
            break
    return times, faults


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
    zoo = {T: (f, b) for T, name, f, b, *_ in rows if name.startswith("zoo linear_scan")}
    zoo_log = {T: (f, b) for T, name, f, b, *_ in rows if name.startswith("zoo log_linear_scan")}
    for T, name, f, b, *paired in rows:
        if f is None:
            lines.append(f"| {T} | {name} | | | | |")
            continue
        ref = zoo_log.get(T) if ("Heinsen" in name or "log_linear" in name) else zoo.get(T)
        if name.startswith("memory floor"):
            rf, rb = (f"zoo / floor = {r:.2f}" for r in paired[0])
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
            f"T={T}: {12 * B * T * D / f / 1e6:.1f} GB/s"
            for T, name, f, b, *_ in rows
            if name.startswith("memory floor")
        )
        + ".",
        f"zoo / floor: zoo's linear_scan and the floor timed in the same {args.floor_rounds} (at most; fewer past "
        f"{args.budget:.0f} s) interleaved rounds (zoo forward, floor forward, zoo forward+backward, floor "
        "forward+backward, the order rotating), the median of the rounds' ratios; the floor row's times are "
        "from those rounds. "
        "Timed apart, each would meet the caches only its own calls leave: at T = 1K the floor's 24 MiB stays "
        "in the 32 MiB L3 across its calls while zoo's forward+backward working set does not.",
        f"Minor page faults per call in those rounds (median; {B * D * 4 // 4096} per T-step of one (B, T, D) "
        "tensor: a freshly mapped tensor faults once per 4 KiB page): "
        + "; ".join(f"T={T}: {extra[1]}" for T, name, f, b, *extra in rows if name.startswith("memory floor"))
        + ".",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
