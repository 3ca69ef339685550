"""Shared checks for documents (resets): packed rows equal each document run alone.

`layout(T)` gives rows made of several documents of varied lengths: a row whose first
document continues the incoming state, documents of length 1, a document starting at t = 0,
and a row without any start. `packed_equals_separate` runs an op once on the packed rows
with `resets=` and once per document (from the initial state with its first token marked as
a start, or from the row's incoming state, unmarked, for a first document that continues it)
and compares outputs, the final state and the gradients of every tensor input in float64.
Marking a lone document's first token changes nothing for a scan or a conv from the initial
state; for the RG-LRU it sets the normaliser to 1 there, as RecurrentGemma does at t = 0.
"""

from __future__ import annotations

import torch


def layout(T: int) -> torch.Tensor:
    """(3, T) bool document starts, T >= 8. Row 0 continues the incoming state, then documents
    of lengths 1, T - 7 and 3; row 1 starts at 0 with two length-1 documents and ends with
    one; row 2 has no start (one document continuing the state)."""
    assert T >= 8
    r = torch.zeros(3, T, dtype=torch.bool)
    r[0, [3, 4, T - 3]] = True
    r[1, [0, 1, 2, T // 2 + 1, T - 1]] = True
    return r


def documents(row: torch.Tensor) -> list[tuple[int, int]]:
    """[(begin, end)) of each document in one row of starts (the first may continue)."""
    T = row.shape[0]
    cuts = [0] + [t for t in range(1, T) if row[t]] + [T]
    return list(zip(cuts[:-1], cuts[1:]))


def _grads(loss, leaves):
    gs = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, gs)]


def packed_equals_separate(fn, seq: dict, state: dict, shared: dict, resets: torch.Tensor, tol=1e-12) -> None:
    """fn(**seq, **state, **shared, resets=...) -> (out (B, T, ...), last state (B, ...)).

    seq: tensors (B, T, ...) sliced per document; state: the incoming state tensors (B, ...)
    (given to a row's first document when it does not start at 0, else left out: the op's
    initial state); shared: parameters and options passed to every call."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in {**seq, **state}.items()}
    params = {k: (v.detach().clone().requires_grad_() if isinstance(v, torch.Tensor) else v) for k, v in shared.items()}
    every = list(leaves.values()) + [v for v in params.values() if isinstance(v, torch.Tensor)]
    out, last = fn(**leaves, **params, resets=resets)
    g = torch.Generator().manual_seed(7)
    G, Gs = (torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (out, last))
    packed = [out, last, *_grads((out * G).sum() + (last * Gs).sum(), every)]

    outs, lasts, loss = torch.zeros_like(out), [], 0
    for b in range(resets.shape[0]):
        for a, e in documents(resets[b]):
            part = {k: leaves[k][b : b + 1, a:e] for k in seq}
            if a == 0 and not resets[b, 0]:
                part.update({k: leaves[k][b : b + 1] for k in state})
            else:
                part["resets"] = torch.arange(e - a, device=resets.device)[None] == 0
            o, s = fn(**part, **params)
            outs[b : b + 1, a:e] = o.detach()
            loss = loss + (o * G[b : b + 1, a:e]).sum()
            if e == resets.shape[1]:
                lasts.append(s)
                loss = loss + (s * Gs[b : b + 1]).sum()
    alone = [outs, torch.cat([s.detach() for s in lasts]), *_grads(loss, every)]
    names = ["out", "state", *leaves, *[k for k, v in params.items() if isinstance(v, torch.Tensor)]]
    for name, p, s in zip(names, packed, alone):
        assert p.shape == s.shape, name
        if not p.numel():
            continue
        err = (p.detach() - s).abs().max().item()
        assert err <= tol * max(1.0, s.abs().max().item()), f"{name}: packed != separate by {err:.3g}"


def steps_equal_forward(step, forward_out, x, state, reset_col, tol=1e-12):
    """Run `step(x_t, state, reset_t)` over time and compare with the packed forward's output."""
    outs = []
    for t in range(x.shape[1]):
        o, state = step(x[:, t], state, reset_col[:, t])
        outs.append(o)
    got = torch.stack(outs, 1)
    err = (got - forward_out).abs().max().item()
    assert err <= tol * max(1.0, forward_out.abs().max().item()), f"step != forward by {err:.3g}"
    return state
