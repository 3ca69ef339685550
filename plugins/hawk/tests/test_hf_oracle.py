"""Outside oracle: transformers' RecurrentGemmaRecurrentBlock (and its local attention)
with zoo's weights copied in, float64, outputs and gradients, every zoo path
(fast scan, naive loop, step); with document starts (`resets`) instead of reset_at_start
too, and packed documents against RecurrentGemma run on each one."""

import pytest
import torch

from zoo_core.testing.hf import hf_float64, require_transformers
from zoo_hawk import Hawk, HawkConfig
from zoo_hawk.reference import naive_hawk

transformers = require_transformers()
f64 = torch.float64
DIM, HEADS = 16, 4


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def pair(seed=0, reset_at_start=True):
    torch.manual_seed(seed)
    zoo = Hawk(DIM, HawkConfig(expand=1.5, gate_heads=HEADS, bias=True, reset_at_start=reset_at_start)).to(f64)
    with torch.no_grad():
        for p in zoo.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    cfg = transformers.RecurrentGemmaConfig(
        hidden_size=DIM,
        lru_width=zoo.hidden,
        num_attention_heads=HEADS,
        conv1d_width=4,
        num_hidden_layers=1,
        vocab_size=8,
        block_types=["recurrent"],
    )
    from transformers.models.recurrent_gemma.modeling_recurrent_gemma import RecurrentGemmaRecurrentBlock

    hf = RecurrentGemmaRecurrentBlock(cfg, 0).to(f64).eval()
    H, n = zoo.hidden, HEADS
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


def run_zoo(m, x, path):
    if path == "naive":
        return naive_hawk(m, x)
    if path == "step":
        state, outs = m.init_state(x.shape[0], dtype=x.dtype), []
        for t in range(x.shape[1]):
            y, state = m.step(x[:, t], state)
            outs.append(y)
        return torch.stack(outs, 1)
    return m(x)[0]


@pytest.mark.parametrize("path", ["fast", "naive", "step"])
def test_hawk_equals_recurrent_gemma_recurrent_block(path):
    zoo, hf = pair()
    T = 12
    x = torch.randn(2, T, DIM, dtype=f64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(2, T, DIM, dtype=f64, generator=torch.Generator().manual_seed(2))
    xz, xh = x.clone().requires_grad_(), x.clone().requires_grad_()
    yz = run_zoo(zoo, xz, path)
    pos = torch.arange(T)[None].expand(2, T)
    with hf_float64():
        yh = hf(xh, position_ids=pos, attention_mask=None, use_cache=False)[0]
    assert rel(yz, yh) < 1e-12
    params = [zoo.in_proj.weight, zoo.gate_weight, zoo.gate_bias, zoo.a_param, zoo.conv.weight, zoo.out_proj.weight]
    hf_params = [
        hf.linear_y.weight,
        hf.rg_lru.recurrent_gate_weight,
        hf.rg_lru.recurrent_gate_bias,
        hf.rg_lru.recurrent_param,
        hf.conv_1d.weight,
        hf.linear_out.weight,
    ]
    gz = torch.autograd.grad((yz * w).sum(), [xz, *params])
    with hf_float64():
        gh = torch.autograd.grad((yh * w).sum(), [xh, *hf_params])
    H = zoo.hidden
    assert rel(gz[0], gh[0]) < 1e-10, "input"
    assert rel(gz[1][:H], gh[1]) < 1e-10, "linear_y"
    assert rel(gz[2][0], gh[2]) < 1e-10, "recurrent gate weight"
    assert rel(gz[3][:H], gh[3].flatten()) < 1e-10, "recurrent gate bias"
    assert rel(-gz[4], gh[4]) < 1e-10, "recurrent_param (= -Lambda)"
    assert rel(gz[5], gh[5].squeeze(1)) < 1e-10, "conv"
    assert rel(gz[6], gh[6]) < 1e-10, "linear_out"


def test_without_reset_at_start_only_position_zero_differs():
    """What the reset is: the same block without it agrees with RecurrentGemma on nothing
    after position 0 either (h_0 is carried), so the option is needed for any position."""
    zoo, hf = pair()
    plain = Hawk(DIM, HawkConfig(expand=1.5, gate_heads=HEADS, bias=True)).to(f64)
    plain.load_state_dict(zoo.state_dict())
    x = torch.randn(1, 8, DIM, dtype=f64)
    with hf_float64(), torch.no_grad():
        yh = hf(x, position_ids=torch.arange(8)[None], attention_mask=None, use_cache=False)[0]
        y = plain(x)[0]
    assert all(rel(y[:, t], yh[:, t]) > 1e-8 for t in range(8))


# ---- documents: resets instead of reset_at_start ----------------------------------------------------


def hf_run(hf, x):
    pos = torch.arange(x.shape[1])[None].expand(x.shape[0], -1)
    with hf_float64():
        return hf(x, position_ids=pos, attention_mask=None, use_cache=False)[0]


@pytest.mark.parametrize("path", ["fast", "naive", "step"])
def test_reset_at_zero_equals_recurrent_gemma_at_every_position(path):
    zoo, hf = pair(reset_at_start=False)  # the resets say where documents start
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
        plain = zoo(x)[0]
    err = (y - yh).abs().amax((0, 2))  # per position
    assert err.max() < 1e-12 * yh.abs().max(), err
    assert (plain[:, 0] - yh[:, 0]).abs().max() > 1e-6  # without the reset, position 0 differs


def test_packed_documents_equal_recurrent_gemma_per_document_with_gradients():
    zoo, hf = pair(reset_at_start=False)
    T = 14
    resets = torch.zeros(1, T, dtype=torch.bool)
    resets[0, [0, 1, 2, 8, 13]] = True  # five documents, lengths 1, 1, 6, 5, 1
    cuts = [0, 1, 2, 8, 13, T]
    x = torch.randn(1, T, DIM, dtype=f64, generator=torch.Generator().manual_seed(2))
    xz, xh = x.clone().requires_grad_(), x.clone().requires_grad_()
    yz = zoo(xz, resets=resets)[0]
    yh = torch.cat([hf_run(hf, xh[:, a:e]) for a, e in zip(cuts[:-1], cuts[1:])], 1)
    assert (yz - yh).abs().max() < 1e-12 * yh.abs().max()
    w = torch.randn_like(yz)
    with hf_float64():
        gz, gh = torch.autograd.grad((yz * w).sum(), xz)[0], torch.autograd.grad((yh * w).sum(), xh)[0]
    assert (gz - gh).abs().max() < 1e-10 * gh.abs().max()
