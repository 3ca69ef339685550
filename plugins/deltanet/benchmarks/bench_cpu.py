"""The delta rule on CPU: the chunked WY/UT form against the per-token recurrences.

    python plugins/deltanet/benchmarks/bench_cpu.py [--threads 1] [--lengths 256,2048]

1. Time, forward + backward (median of repeats, float32), of one Gated DeltaNet layer's
   core (B=2, H=4, d_k=64, d_v=128) at each length:
   - naive: reference.naive_delta_rule, the equation S a (I - beta k k^T) + beta v k^T per token
     (a d_k x d_k matrix product per step, as the paper writes it);
   - recurrent: the O(d_k d_v) update `step` uses (H += k (beta (v - H^T k))^T), per token;
   - chunked: chunked.chunk_delta_rule at chunk sizes 16, 32, 64.
2. Memory: bytes of the tensors autograd saves for the backward (storages counted once),
   per token, at each length: what grows with T. The recurrences keep a d_k x d_v state per
   token; the chunked form keeps per-chunk blocks and one state per chunk.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from zoo_deltanet.chunked import chunk_delta_rule
from zoo_deltanet.reference import naive_delta_rule

B, H, DK, DV = 2, 4, 64, 128


def inputs(T, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    q, k = F.normalize(r(B, T, H, DK), dim=-1), F.normalize(r(B, T, H, DK), dim=-1)
    return [q, k, r(B, T, H, DV), torch.sigmoid(r(B, T, H)), -torch.rand(B, T, H, generator=g)]


def recurrent(q, k, v, beta, log_a):
    """The decoding update, token by token (what `GatedDeltaNet.step` does)."""
    h = q.new_zeros(B, H, DK, DV)
    q = q * DK**-0.5
    outs = []
    for t in range(q.shape[1]):
        h = h * log_a[:, t].exp()[..., None, None]
        delta = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhkv,bhk->bhv", h, k[:, t]))
        h = h + k[:, t, :, :, None] * delta[:, :, None, :]
        outs.append(torch.einsum("bhkv,bhk->bhv", h, q[:, t]))
    return torch.stack(outs, 1), h


PATHS = {
    "naive": lambda q, k, v, b, a: naive_delta_rule(q, k, v, b, a.exp()),
    "recurrent": recurrent,
    **{f"chunked C={c}": (lambda c: lambda q, k, v, b, a: chunk_delta_rule(q, k, v, b, a, c))(c) for c in (16, 32, 64)},
}


def fwd_bwd(fn, args):
    leaves = [t.detach().requires_grad_() for t in args]
    o, h = fn(*leaves)
    (o.sum() + h.sum()).backward()


def timed(fn, args, repeats):
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        fwd_bwd(fn, args)
        if i:  # the first call warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def saved_bytes(fn, args):
    """Bytes autograd keeps for the backward (each storage once)."""
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    leaves = [t.detach().requires_grad_() for t in args]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        o, h = fn(*leaves)
    del o, h
    return sum(seen.values())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lengths", default="256,2048")
    p.add_argument("--memory-lengths", default="256,512,1024,2048,4096")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), B={B} H={H} d_k={DK} d_v={DV}, float32, "
        f"forward + backward, median of {args.repeats}\n"
    )
    print("| path | " + " | ".join(f"T={T} ms" for T in lengths) + " |")
    print("|---|" + "---:|" * len(lengths))
    rows = {}
    for name, fn in PATHS.items():
        rows[name] = [timed(fn, inputs(T), args.repeats) for T in lengths]
        print(f"| {name} | " + " | ".join(f"{t:.1f}" for t in rows[name]) + " |", flush=True)
    best = min((n for n in rows if n.startswith("chunked")), key=lambda n: rows[n][-1])
    for base in ("naive", "recurrent"):
        print(f"\n{best} vs {base} at T={lengths[-1]}: {rows[base][-1] / rows[best][-1]:.1f}x")

    mem_lengths = [int(x) for x in args.memory_lengths.split(",")]
    print("\nSaved for backward, bytes per token (B x T tokens):\n")
    print("| path | " + " | ".join(f"T={T}" for T in mem_lengths) + " |")
    print("|---|" + "---:|" * len(mem_lengths))
    for name in ("recurrent", "chunked C=64"):
        per_tok = [saved_bytes(PATHS[name], inputs(T)) / (B * T) for T in mem_lengths]
        print(f"| {name} | " + " | ".join(f"{b:,.0f}" for b in per_tok) + " |", flush=True)
    inp = sum(t[:, :1].numel() * 4 for t in inputs(1)) / B
    print(f"\n(the inputs q, k, v, beta, log_a themselves are {inp:,.0f} bytes per token)")


if __name__ == "__main__":
    main()
