"""Mamba-2's chunked SSD in PyTorch (zoo_kernels/ssd/chunk.py) against the naive recurrence.

Both run in float64 here, so only round-off separates them (about 1e-16 per operation);
1e-10 (norm-wise relative) leaves a wide margin while any wrong term would be of order 1.
float32 runs against the loop in float64 on the same rounded values: 1e-5, as for the
Triton path (unit round-off 6e-8, a few bits lost in the cumulative decays).
"""

import pytest
import torch
import torch.nn.functional as F

from zoo_kernels.ssd import ssd_chunked, ssd_naive


def inputs(b, T, H, P, G, N, dtype, with_h0=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    return [
        r(b, T, H, P),
        F.softplus(r(b, T, H)),
        -torch.exp(r(H)),
        r(b, T, G, N),
        r(b, T, G, N),
        r(b, H, P, N) if with_h0 else None,
    ]


def outputs_and_grads(fn, args):
    leaves = [None if t is None else t.detach().requires_grad_() for t in args]
    y, h = fn(*leaves)
    g = torch.Generator().manual_seed(1)
    wy, wh = (torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (y, h))
    used = [t for t in leaves if t is not None]
    grads = torch.autograd.grad((y.double() * wy).sum() + (h.double() * wh).sum(), used)
    return [y, h, *grads]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize(
    "b,T,H,P,G,N,L,with_h0",
    [
        (2, 13, 4, 3, 2, 5, 4, True),  # 2 groups; 4 chunks, the last partial
        (1, 1, 2, 4, 1, 3, 8, True),  # one step
        (2, 9, 3, 2, 3, 4, 16, False),  # a chunk longer than the sequence; a group per head
        (1, 64, 2, 8, 1, 16, 16, True),  # 4 whole chunks
    ],
)
def test_ssd_chunked_matches_the_loop_with_gradients(b, T, H, P, G, N, L, with_h0, dtype, tol):
    args = inputs(b, T, H, P, G, N, dtype, with_h0)
    got = outputs_and_grads(lambda *a: ssd_chunked(*a[:5], L, a[5]), args)
    want = outputs_and_grads(ssd_naive, [None if t is None else t.double() for t in args])
    for name, a, w in zip(["y", "h_T", "dx", "ddt", "dA", "dB", "dC", "dh0"], got, want):
        err = ((a.double() - w).norm() / w.norm()).item()
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"
