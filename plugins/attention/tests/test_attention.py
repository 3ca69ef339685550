"""Attention's three paths agree: naive softmax, SDPA, and the KV-cache step."""

import pytest
import torch

from zoo_attention import Attention, AttentionConfig


def make(dim=32, **kw):
    torch.manual_seed(0)
    m = Attention(dim, AttentionConfig(head_dim=8, **kw))
    m.reset_parameters()
    return m.double()


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"n_kv_heads": 2},
        {"window": 5},
        {"n_kv_heads": 1, "window": 3},
        {"window": 12},
        {"window": 13},
        {"n_kv_heads": 1, "window": 64},
        {"rope_fraction": 0.5, "out_bias": True},
        {"position": "learned"},
        {"position": "none", "window": 5},
        {"conv": 3, "position": "none"},
    ],
)  # T = 13
def test_sdpa_equals_naive_with_gradients(kw):
    fast, naive = make(**kw), make(**kw, backend="naive")
    x = torch.randn(2, 13, 32, dtype=torch.float64, requires_grad=True)
    y_fast, _ = fast(x)
    g = torch.randn_like(y_fast)
    (gx_fast,) = torch.autograd.grad(y_fast, x, g)
    y_naive, _ = naive(x)
    (gx_naive,) = torch.autograd.grad(y_naive, x, g)
    assert rel(y_fast, y_naive) < 1e-10 and rel(gx_fast, gx_naive) < 1e-10
    gp_fast = torch.autograd.grad(fast(x)[0], list(fast.parameters()), g)
    gp_naive = torch.autograd.grad(naive(x)[0], list(naive.parameters()), g)
    assert all(rel(a, b) < 1e-10 for a, b in zip(gp_fast, gp_naive))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"n_kv_heads": 2},
        {"window": 4},
        {"rope_fraction": 0.25, "out_bias": True},
        {"position": "learned"},
        {"position": "none"},
        {"conv": 3, "position": "learned", "window": 4},
    ],
)
def test_step_equals_parallel(kw):
    m = make(**kw)
    x = torch.randn(3, 11, 32, dtype=torch.float64)
    y, _ = m(x)
    state = m.init_state(3)
    outs = []
    for t in range(11):
        o, state = m.step(x[:, t], state)
        outs.append(o)
    assert rel(torch.stack(outs, 1), y) < 1e-10


@pytest.mark.parametrize("kw", [{}, {"window": 4}, {"position": "learned", "window": 4}, {"conv": 4}])
def test_state_carry_equals_whole_sequence(kw):
    m = make(**kw)
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    whole, _ = m(x)
    a, st = m(x[:, :7], return_state=True)
    b, _ = m(x[:, 7:], st)
    assert rel(torch.cat([a, b], 1), whole) < 1e-10


def test_causal():
    m = make()
    x = torch.randn(1, 10, 32, dtype=torch.float64)
    y1, _ = m(x)
    x2 = x.clone()
    x2[:, 6] += 1.0
    y2, _ = m(x2)
    assert torch.allclose(y1[:, :6], y2[:, :6]) and not torch.allclose(y1[:, 6:], y2[:, 6:])


def test_window_bounds_state_size_and_flops():
    full, local = make(), make(window=8)
    assert local.state_size(1000) < full.state_size(1000)
    assert local.state_size(1000) == local.state_size(2000)
    assert full.flops_per_token(1024) > full.flops_per_token(128) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_complex_rope_equals_reference_rope(dtype):
    from zoo_attention.rope import rope, rope_cis, rotate

    x = torch.randn(2, 9, 3, 8).to(dtype)  # (B, T, H, hd)
    pos = torch.tensor([[5 + t for t in range(9)], list(range(9))])
    cis = rope_cis(pos, 8, 500.0, dtype)
    ours = rotate(x, cis).transpose(1, 2)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, rope(x.transpose(1, 2), pos, 500.0))
    xg = x.clone().requires_grad_()
    traced = torch.compile(lambda x: rotate(x, rope_cis(pos, 8, 500.0, dtype)), backend="aot_eager", fullgraph=True)(
        xg
    )  # the real (cos, sin) form, cos and sin from one opaque op
    torch.testing.assert_close(traced.transpose(1, 2), ours)
    w = torch.randn(traced.shape).to(dtype)
    xr = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad((traced * w).float().sum(), xg)
    (want,) = torch.autograd.grad((rope(xr.transpose(1, 2), pos, 500.0).transpose(1, 2) * w).float().sum(), xr)
    torch.testing.assert_close(grad, want)


def test_cos_sin_op():
    from zoo_attention.rope import cos_sin

    angles = torch.randn(2, 5, 1, 4) * 100
    torch.library.opcheck(cos_sin, (angles,))
    cos, sin = cos_sin(angles)
    assert torch.equal(cos, angles.cos()) and torch.equal(sin, angles.sin())


def test_partial_rope_leaves_the_last_dims_unrotated():
    m = make(rope_fraction=0.5, backend="naive")
    x = torch.randn(1, 6, 32, dtype=torch.float64)
    q, k, _ = m._qkv(x, torch.arange(6)[None])
    raw = m.wq(x).view(1, 6, m.n_heads, m.head_dim).transpose(1, 2)
    half = m.head_dim // 2
    assert torch.equal(q[..., half:], raw[..., half:]) and not torch.allclose(q[..., :half], raw[..., :half])


@pytest.mark.parametrize("position, order_matters", [("rope", True), ("learned", True), ("none", False)])
def test_position_option_is_what_tells_order(position, order_matters):
    """Without a position signal the last query sees its context as a set: swapping two
    earlier tokens leaves its output unchanged; rope and learned positions change it."""
    m = make(position=position, max_positions=16)
    x = torch.randn(1, 8, 32, dtype=torch.float64)
    swapped = x.clone()
    swapped[:, [1, 4]] = x[:, [4, 1]]
    same = torch.allclose(m(x)[0][:, -1], m(swapped)[0][:, -1], atol=1e-12)
    assert same != order_matters
    if position == "learned":
        with pytest.raises(ValueError, match="max_positions"):
            m(torch.randn(1, 17, 32, dtype=torch.float64))


def test_unknown_position_is_refused():
    with pytest.raises(ValueError, match="rope, learned, none"):
        make(position="alibi")


def test_short_conv_is_causal_and_counted_in_the_state():
    m, plain = make(conv=3, position="none"), make(position="none")
    x = torch.randn(1, 10, 32, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 6] += 1.0
    y1, y2 = m(x)[0], m(x2)[0]
    assert torch.allclose(y1[:, :6], y2[:, :6]) and not torch.allclose(y1[:, 6:], y2[:, 6:])
    assert m.state_size(100) - plain.state_size(100) == 2 * 32 * 8  # the last 2 inputs, float64
    with pytest.raises(ValueError, match="conv"):
        make(conv=1)


def test_attention_path_is_picked_once(monkeypatch):
    """naive | flash | sdpa: flash-attn only under backend=auto with nothing cached, and only
    where it is usable (CUDA half precision, installed); SDPA otherwise."""
    from zoo_attention import flash
    from zoo_attention.mixer import attention_path

    q = torch.zeros(1, 2, 3, 8)
    assert attention_path("naive", q, plain_causal=True) == "naive"
    assert attention_path("auto", q, plain_causal=True) == "sdpa"  # a CPU tensor
    monkeypatch.setattr(flash, "usable", lambda q: True)
    assert attention_path("auto", q, plain_causal=True) == "flash"
    assert attention_path("auto", q, plain_causal=False) == "sdpa"  # a KV cache: SDPA with a mask
    assert attention_path("sdpa", q, plain_causal=True) == "sdpa"
