"""Documents in minGRU and minLSTM (every variant: log space or not, with the conv and the
output gate): packed rows with `resets` equal each document run alone (float64, outputs,
final state and gradients of the input and every parameter); the naive reference and the
step with `reset` agree with the fast path; on both scan paths (the compiled C kernel and the
chunked PyTorch scan, lengths over 64 so the chunk carry runs)."""

import pytest
import torch

from zoo_core.testing.documents import assert_paths_agree_with_resets, packed_starts, spans
from zoo_mingru import MinGRU, MinGRUConfig, MinLSTM, MinLSTMConfig
from zoo_mingru.reference import naive_min_rnn

KINDS = {"mingru": (MinGRU, MinGRUConfig), "minlstm": (MinLSTM, MinLSTMConfig)}
VARIANTS = [{}, {"conv": 4, "out_gate": True, "expand": 2.0}, {"log_space": False, "conv": 3}]
CASES = [(k, v) for k in KINDS for v in VARIANTS]
DIM, f64 = 8, torch.float64


def make(kind, **kw):
    torch.manual_seed(0)
    cls, cfg = KINDS[kind]
    return cls(DIM, cfg(**kw)).to(f64)


def incoming(m, B):
    st = m.init_state(B, dtype=f64)
    st["h"] = torch.rand_like(st["h"]) + 0.1 if m.config.log_space else torch.randn_like(st["h"])
    if "conv" in st:
        st["conv"] = torch.randn_like(st["conv"])
    return st


def flat(state):
    return torch.cat([v.flatten(1) for _, v in sorted(state.items())], 1)


@pytest.fixture(params=["compiled", "chunked"])
def scan_path(request, monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS_CPP", "1" if request.param == "compiled" else "0")


@pytest.mark.parametrize("kind,kw", CASES)
@pytest.mark.parametrize("T", [9, 70])
def test_packed_equals_separate_with_gradients(scan_path, kind, kw, T):
    m, resets = make(kind, **kw), packed_starts(T)
    x = torch.randn(3, T, DIM, dtype=f64, requires_grad=True)
    st, params = incoming(m, 3), list(m.parameters())
    y, last = m(x, st, return_state=True, resets=resets)
    G, Gs = torch.randn_like(y), torch.randn_like(flat(last))
    packed = [y, flat(last), *torch.autograd.grad((y * G).sum() + (flat(last) * Gs).sum(), [x, *params])]
    ys, lasts, loss = torch.zeros_like(y), [], 0
    for b in range(3):
        for a, e in spans(resets[b]):
            row = None if a > 0 or resets[b, 0] else {k: v[b : b + 1] for k, v in st.items()}
            o, s = m(x[b : b + 1, a:e], row, return_state=True)
            ys[b : b + 1, a:e] = o.detach()
            loss = loss + (o * G[b : b + 1, a:e]).sum()
            if e == T:
                lasts.append(flat(s))
                loss = loss + (flat(s) * Gs[b : b + 1]).sum()
    alone = [ys, torch.cat(lasts).detach(), *torch.autograd.grad(loss, [x, *params])]
    for p, s in zip(packed, alone):
        assert (p.detach() - s).abs().max() <= 1e-12 * max(1.0, s.abs().max().item())


@pytest.mark.parametrize("kind,kw", CASES)
def test_naive_and_step_with_resets_equal_the_fast_path(kind, kw):
    m, T = make(kind, **kw), 11
    resets = packed_starts(T)
    x = torch.randn(3, T, DIM, dtype=f64, requires_grad=True)
    st = incoming(m, 3)
    assert_paths_agree_with_resets(m, naive_min_rnn, x, st, resets)


@pytest.mark.parametrize("kind", list(KINDS))
def test_no_resets_keeps_the_stream(kind):
    m = make(kind, conv=4)
    x = torch.randn(2, 9, DIM, dtype=f64)
    st = incoming(m, 2)
    a, sa = m(x, st, return_state=True)
    b, sb = m(x, st, return_state=True, resets=torch.zeros(2, 9, dtype=torch.bool))
    assert torch.equal(a, b) and all(torch.equal(sa[k], sb[k]) for k in sa)
