"""Outside oracle: transformers' LlamaAttention with zoo's weights copied in (q and k rows
permuted: zoo's RoPE rotates interleaved pairs, Llama's halves), float64, outputs and
gradients, zoo's paths (SDPA, the CPU matmul kernel, naive, KV-cache step)."""

import pytest
import torch

from zoo_attention import Attention, AttentionConfig
from zoo_attention.hf import to_halves
from zoo_core.testing.hf import hf_float64, require_transformers

transformers = require_transformers()
f64 = torch.float64
DIM = 32


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def pair(heads=4, kv=2, hd=8, theta=10000.0, backend="sdpa"):
    torch.manual_seed(0)
    zoo = Attention(
        DIM, AttentionConfig(n_heads=heads, n_kv_heads=kv, head_dim=hd, rope_theta=theta, backend=backend)
    ).to(f64)
    cfg = transformers.LlamaConfig(
        hidden_size=DIM,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=hd,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        num_hidden_layers=1,
        vocab_size=8,
        intermediate_size=8,
    )
    cfg._attn_implementation = "eager"
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    hf = LlamaAttention(cfg, 0).to(f64).eval()
    rotary = LlamaRotaryEmbedding(cfg)
    k, v = zoo.wkv.weight.split(kv * hd)
    with torch.no_grad():
        hf.q_proj.weight.copy_(to_halves(zoo.wq.weight, hd))
        hf.k_proj.weight.copy_(to_halves(k, hd))
        hf.v_proj.weight.copy_(v)
        hf.o_proj.weight.copy_(zoo.wo.weight)
    return zoo, hf, rotary


def run_zoo(m, x, path, resets=None):
    """zoo's output on `path`: forward, or (step) one token at a time with each token's reset."""
    if path == "step":
        state, outs = m.init_state(x.shape[0], dtype=x.dtype), []
        for t in range(x.shape[1]):
            y, state = m.step(x[:, t], state, **({} if resets is None else {"reset": resets[:, t]}))
            outs.append(y)
        return torch.stack(outs, 1)
    return m(x, **({} if resets is None else {"resets": resets}))[0]


def backend(path):
    return path if path in ("naive", "matmul") else "sdpa"


def assert_same(zoo, hf, yz, yh, xz, xh):
    """Outputs, and gradients of the input and the q and o weights, within 1e-6 relative: both
    sides hold float32 inverse RoPE frequencies, from different formulas (1 / theta^x, theta^-x)."""
    w = torch.randn(yz.shape, dtype=f64, generator=torch.Generator().manual_seed(2))
    assert rel(yz, yh) < 1e-6
    gz = torch.autograd.grad((yz * w).sum(), [xz, zoo.wq.weight, zoo.wo.weight])
    with hf_float64():
        gh = torch.autograd.grad((yh * w).sum(), [xh, hf.q_proj.weight, hf.o_proj.weight])
    assert rel(gz[0], gh[0]) < 1e-6
    assert rel(to_halves(gz[1], 8), gh[1]) < 1e-6
    assert rel(gz[2], gh[2]) < 1e-6


@pytest.mark.parametrize("path", ["sdpa", "matmul", "naive", "step"])
@pytest.mark.parametrize("heads,kv,theta", [(4, 2, 10000.0), (4, 4, 500.0), (4, 1, 1e6)])
def test_attention_equals_transformers_llama_attention(path, heads, kv, theta):
    zoo, hf, rotary = pair(heads, kv, theta=theta, backend=backend(path))
    B, T = 2, 11
    x = torch.randn(B, T, DIM, dtype=f64, generator=torch.Generator().manual_seed(1))
    xz, xh = x.clone().requires_grad_(), x.clone().requires_grad_()
    yz = run_zoo(zoo, xz, path)
    mask = torch.full((T, T), float("-inf"), dtype=f64).triu(1)[None, None]
    with hf_float64():
        cos_sin = rotary(xh, torch.arange(T)[None])
        yh = hf(xh, position_embeddings=cos_sin, attention_mask=mask)[0]
    assert_same(zoo, hf, yz, yh, xz, xh)


@pytest.mark.parametrize("path", ["sdpa", "naive", "step"])
def test_packed_documents_equal_transformers_llama_with_a_block_diagonal_mask(path):
    """data.documents=reset against an outside oracle: LlamaAttention given the packed rows, a
    block-diagonal causal mask and position ids that restart at each document (the packed-sequence
    form transformers takes) equals zoo's attention with `resets`, outputs and gradients."""
    zoo, hf, rotary = pair(4, 2, backend=backend(path))
    B, T = 2, 13
    resets = torch.zeros(B, T, dtype=torch.bool)
    resets[0, [0, 4, 5, 11]] = True
    resets[1, [0, 7]] = True
    doc = resets.cumsum(1)  # document id of each position
    first = torch.stack([torch.tensor([max(s for s in range(t + 1) if r[s]) for t in range(T)]) for r in resets])
    positions = torch.arange(T)[None] - first
    allowed = (doc[:, :, None] == doc[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    mask = torch.zeros(B, 1, T, T, dtype=f64).masked_fill(~allowed[:, None], float("-inf"))
    x = torch.randn(B, T, DIM, dtype=f64, generator=torch.Generator().manual_seed(1))
    xz, xh = x.clone().requires_grad_(), x.clone().requires_grad_()
    yz = run_zoo(zoo, xz, path, resets)
    with hf_float64():
        cos_sin = rotary(xh, positions)
        yh = hf(xh, position_embeddings=cos_sin, attention_mask=mask)[0]
    assert_same(zoo, hf, yz, yh, xz, xh)
