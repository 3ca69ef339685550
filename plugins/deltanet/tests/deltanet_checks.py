"""Random delta-rule inputs shared by the tests (L2-normalised keys, as the mixers feed them)."""

import sys

import torch
import torch.nn.functional as F


def import_qwen3_next():
    """transformers' modeling_qwen3_next, imported with fla hidden: transformers binds fla's
    kernels at import when fla is importable (they are Triton, CUDA only, and importing all of
    fla.ops costs ~10 s). Skips the test when transformers has no Qwen3-Next (< 4.57)."""
    import pytest

    fla = {n: sys.modules.pop(n) for n in list(sys.modules) if n == "fla" or n.startswith("fla.")}
    sys.modules["fla"] = None
    try:
        return pytest.importorskip(
            "transformers.models.qwen3_next.modeling_qwen3_next",
            reason="transformers with Qwen3-Next (>= 4.57) is not installed",
        )
    finally:
        del sys.modules["fla"]
        sys.modules.update(fla)


def rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def rule_inputs(B=2, T=37, H=3, K=5, V=7, gated=True, h0=True, seed=0, dtype=torch.float64):
    """q, k, v, beta, log_a (or None), h0 (or None); log a_t in about [-2, 0]."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    q, k = F.normalize(r(B, T, H, K), dim=-1), F.normalize(r(B, T, H, K), dim=-1)
    beta = torch.sigmoid(r(B, T, H))
    log_a = -2 * torch.rand(B, T, H, generator=g, dtype=dtype) if gated else None
    return [q, k, r(B, T, H, V), beta, log_a, r(B, H, K, V) if h0 else None]


def leaves(args):
    return [None if t is None else t.detach().clone().requires_grad_() for t in args]


def outputs_and_grads(fn, args, seed=1):
    """fn(*args) -> (o, h); returns o, h and the gradients of a random projection of both."""
    xs = leaves(args)
    o, h = fn(*xs)
    g = torch.Generator().manual_seed(seed)
    loss = (o.double() * torch.randn(o.shape, generator=g, dtype=torch.float64)).sum() + (
        h.double() * torch.randn(h.shape, generator=g, dtype=torch.float64)
    ).sum()
    used = [t for t in xs if t is not None]
    return o, h, torch.autograd.grad(loss, used)


#: Rows of packed documents (lengths, and whether the row's first document starts there, True,
#: or continues the incoming state, False), T = 37: length-1 documents, neighbouring starts,
#: starts on chunk boundaries (8, 16) and inside chunks, a row that is one continued document.
DOCS = [((5, 1, 12, 3, 16), True), ((9, 1, 1, 5, 8, 13), False), ((16, 21), False), ((37,), False)]


def doc_resets(docs=DOCS):
    """resets (B, T) bool for `docs`, and per row its documents as (start, end, continues)."""
    T = sum(docs[0][0])
    resets = torch.zeros(len(docs), T, dtype=torch.bool)
    spans = []
    for b, (lengths, starts) in enumerate(docs):
        assert sum(lengths) == T
        s, row = 0, []
        for i, n in enumerate(lengths):
            resets[b, s] = i > 0 or starts
            row.append((s, s + n, i == 0 and not starts))
            s += n
        spans.append(row)
    return resets, spans


def separately(rule, docs=DOCS):
    """rule(q, k, v, beta, log_a, h0) -> (o, h) run on each document alone (from h0's row for a
    row's continued first document, from zero otherwise): the packed call's expected result."""
    _, spans = doc_resets(docs)

    def run(q, k, v, beta, log_a, h0):
        outs, states = [], []
        for b, row in enumerate(spans):
            pieces, h = [], None
            for s, e, continues in row:
                cut = lambda t: None if t is None else t[b : b + 1, s:e]  # noqa: E731, B023
                h_in = h0[b : b + 1] if continues and h0 is not None else None
                o, h = rule(cut(q), cut(k), cut(v), cut(beta), cut(log_a), h_in)
                pieces.append(o)
            outs.append(torch.cat(pieces, 1))
            states.append(h)
        return torch.cat(outs), torch.cat(states)

    return run
