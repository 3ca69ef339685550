"""Documents in Hawk: packed rows with `resets` equal each document run alone (float64,
outputs, final state and gradients of the input and every parameter) on the fast path; the
naive reference and the step with `reset` agree with it; with `resets[:, 0] = True` Hawk
equals transformers' RecurrentGemma at every position, and a packed row equals
RecurrentGemma run on each document."""

import pytest
import torch

from zoo_core.testing.hf import hf_float64, require_transformers
from zoo_hawk import Hawk, HawkConfig
from zoo_hawk.reference import naive_hawk

f64 = torch.float64
DIM = 16


def starts(T):
    """Row 0 continues the incoming state, then documents of lengths 1, T - 7, 3; row 1
    starts at 0 with two length-1 documents; row 2 has no start."""
    r = torch.zeros(3, T, dtype=torch.bool)
    r[0, [3, 4, T - 3]] = True
    r[1, [0, 1, 2, T // 2 + 1, T - 1]] = True
    return r


def documents(row):
    cuts = [0] + [t for t in range(1, len(row)) if row[t]] + [len(row)]
    return list(zip(cuts[:-1], cuts[1:]))


def make(**kw):
    torch.manual_seed(0)
    m = Hawk(DIM, HawkConfig(**kw)).to(f64)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m


def incoming(m, B):
    st = m.init_state(B, dtype=f64)
    st = {k: torch.randn_like(v) if v.is_floating_point() else torch.zeros_like(v) for k, v in st.items()}
    return st  # "start" (reset_at_start) False: the rows go on


def flat(state):
    return torch.cat([v.flatten(1).to(f64) for k, v in sorted(state.items()) if v.is_floating_point()], 1)


@pytest.mark.parametrize("kw", [{}, {"gate_heads": 4, "expand": 1.5, "bias": True, "reset_at_start": True}])
@pytest.mark.parametrize("T", [9, 20])
def test_packed_equals_separate_with_gradients(kw, T):
    m, resets = make(**kw), starts(T)
    x = torch.randn(3, T, DIM, dtype=f64, requires_grad=True)
    st = incoming(m, 3)
    params = list(m.parameters())
    y, last = m(x, st, return_state=True, resets=resets)
    G, Gs = torch.randn_like(y), torch.randn_like(flat(last))
    packed = [y, flat(last), *torch.autograd.grad((y * G).sum() + (flat(last) * Gs).sum(), [x, *params])]
    ys, lasts, loss = torch.zeros_like(y), [], 0
    for b in range(3):
        for a, e in documents(resets[b]):
            if a == 0 and not resets[b, 0]:
                o, s = m(x[b : b + 1, a:e], {k: v[b : b + 1] for k, v in st.items()}, return_state=True)
            else:
                first = torch.arange(e - a)[None] == 0
                o, s = m(x[b : b + 1, a:e], None, return_state=True, resets=first)
            ys[b : b + 1, a:e] = o.detach()
            loss = loss + (o * G[b : b + 1, a:e]).sum()
            if e == T:
                lasts.append(flat(s))
                loss = loss + (flat(s) * Gs[b : b + 1]).sum()
    alone = [ys, torch.cat(lasts).detach(), *torch.autograd.grad(loss, [x, *params])]
    for p, s in zip(packed, alone):
        assert (p.detach() - s).abs().max() <= 1e-12 * max(1.0, s.abs().max().item())


@pytest.mark.parametrize(
    "kw", [{}, {"conv": 2, "expand": 2.0}, {"reset_at_start": True, "gate_heads": 2, "expand": 1.0}]
)
def test_naive_and_step_with_resets_equal_the_fast_path(kw):
    m, T = make(**kw), 13
    resets = starts(T)
    x = torch.randn(3, T, DIM, dtype=f64, requires_grad=True)
    st = incoming(m, 3)
    y, last = m(x, st, return_state=True, resets=resets)
    y_naive = naive_hawk(m, x, st, resets)
    g = torch.randn_like(y)
    params = [x, *m.parameters()]
    assert (y - y_naive).abs().max() < 1e-12
    for a, b in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(y_naive, params, g)):
        assert (a - b).abs().max() < 1e-10
    state, outs = st, []
    with torch.no_grad():
        for t in range(T):
            o, state = m.step(x[:, t], state, reset=resets[:, t])
            outs.append(o)
    assert (torch.stack(outs, 1) - y).abs().max() < 1e-12
    assert all((state[k] - last[k]).abs().max() < 1e-12 for k in last if last[k].is_floating_point())


def test_no_resets_keeps_the_stream():
    m = make()
    x = torch.randn(2, 9, DIM, dtype=f64)
    st = incoming(m, 2)
    a, sa = m(x, st, return_state=True)
    b, sb = m(x, st, return_state=True, resets=torch.zeros(2, 9, dtype=torch.bool))
    assert torch.equal(a, b) and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- transformers' RecurrentGemma ----------------------------------------------------------------


def hf_pair():
    transformers = require_transformers()
    from transformers.models.recurrent_gemma.modeling_recurrent_gemma import RecurrentGemmaRecurrentBlock

    zoo = make(expand=1.5, gate_heads=4, bias=True)  # no reset_at_start: the resets say where
    cfg = transformers.RecurrentGemmaConfig(
        hidden_size=DIM,
        lru_width=zoo.hidden,
        num_attention_heads=4,
        conv1d_width=4,
        num_hidden_layers=1,
        vocab_size=8,
        block_types=["recurrent"],
    )
    hf = RecurrentGemmaRecurrentBlock(cfg, 0).to(f64).eval()
    H, n = zoo.hidden, 4
    gw, gb = zoo.gate_weight, zoo.gate_bias.view(2, n, H // n)
    wy, wx = zoo.in_proj.weight.split(H)
    by, bx = zoo.in_proj.bias.split(H)
    pairs = [
        (wy, hf.linear_y.weight),
        (by, hf.linear_y.bias),
        (wx, hf.linear_x.weight),
        (bx, hf.linear_x.bias),
        (zoo.out_proj.weight, hf.linear_out.weight),
        (zoo.out_proj.bias, hf.linear_out.bias),
        (zoo.conv.weight, hf.conv_1d.weight),
        (zoo.conv.bias, hf.conv_1d.bias),
        (-zoo.a_param, hf.rg_lru.recurrent_param),
        (gw[0], hf.rg_lru.recurrent_gate_weight),
        (gb[0], hf.rg_lru.recurrent_gate_bias),
        (gw[1], hf.rg_lru.input_gate_weight),
        (gb[1], hf.rg_lru.input_gate_bias),
    ]
    with torch.no_grad():
        for p, q in pairs:
            q.copy_(p.reshape(q.shape))
    return zoo, hf


def hf_run(hf, x):
    pos = torch.arange(x.shape[1])[None].expand(x.shape[0], -1)
    with hf_float64():
        return hf(x, position_ids=pos, attention_mask=None, use_cache=False)[0]


@pytest.mark.parametrize("path", ["fast", "naive", "step"])
def test_reset_at_zero_equals_recurrent_gemma_at_every_position(path):
    zoo, hf = hf_pair()
    T = 12
    x = torch.randn(2, T, DIM, dtype=f64, generator=torch.Generator().manual_seed(1))
    resets = torch.zeros(2, T, dtype=torch.bool)
    resets[:, 0] = True
    with torch.no_grad():
        if path == "fast":
            y = zoo(x, resets=resets)[0]
        elif path == "naive":
            y = naive_hawk(zoo, x, resets=resets)
        else:
            state, outs = zoo.init_state(2, dtype=f64), []
            for t in range(T):
                o, state = zoo.step(x[:, t], state, reset=resets[:, t])
                outs.append(o)
            y = torch.stack(outs, 1)
        yh = hf_run(hf, x)
    err = (y - yh).abs().amax((0, 2))  # per position
    assert err.max() < 1e-12 * yh.abs().max(), err
    plain = zoo(x)[0].detach()  # without the reset position 0 differs: the reset is what fixes it
    assert (plain[:, 0] - yh[:, 0]).abs().max() > 1e-6


def test_packed_documents_equal_recurrent_gemma_per_document_with_gradients():
    zoo, hf = hf_pair()
    T = 14
    resets = starts(T)[1:2]  # five documents, lengths 1, 1, 6, 5, 1
    x = torch.randn(1, T, DIM, dtype=f64, generator=torch.Generator().manual_seed(2))
    xz, xh = x.clone().requires_grad_(), x.clone().requires_grad_()
    yz = zoo(xz, resets=resets)[0]
    yh = torch.cat([hf_run(hf, xh[:, a:e]) for a, e in documents(resets[0])], 1)
    assert (yz - yh).abs().max() < 1e-12 * yh.abs().max()
    w = torch.randn_like(yz)
    with hf_float64():
        gz, gh = torch.autograd.grad((yz * w).sum(), xz), torch.autograd.grad((yh * w).sum(), xh)
    assert (gz[0] - gh[0]).abs().max() < 1e-10 * gh[0].abs().max()
