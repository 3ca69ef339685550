"""The core block pieces' fast forms equal their plain definitions, gradients included."""

import pytest
import torch
import torch.nn.functional as F

from zoo_core.loop.layers import RMSNorm, _SiLUGate


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_silu_gate_equals_autograd_through_chunk(dtype):
    torch.manual_seed(0)
    h = torch.randn(3, 5, 8, dtype=dtype, requires_grad=True)
    g = torch.randn(3, 5, 4, dtype=dtype)
    ours = _SiLUGate.apply(h)
    gate, value = h.chunk(2, dim=-1)
    ref = F.silu(gate) * value
    assert torch.equal(ours, ref)
    assert torch.equal(torch.autograd.grad(ours, h, g)[0], torch.autograd.grad(ref, h, g)[0])


def test_silu_gate_gradcheck():
    assert torch.autograd.gradcheck(_SiLUGate.apply, (torch.randn(2, 6, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_its_definition(dtype):
    torch.manual_seed(0)
    norm = RMSNorm(16).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 7, 16, dtype=dtype, requires_grad=True)
    xf = x.float()
    ref = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm.eps)).type_as(x) * norm.weight
    y = norm(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0])


def test_swiglu_compiled_equals_eager():
    """Under torch.compile SwiGLU takes the plain form (inductor fuses it); same values and grads."""
    from zoo_core.blocks import SwiGLU

    torch.manual_seed(0)
    mlp = SwiGLU(8, 12).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 5, 8, dtype=torch.float64)
    eager = mlp(x)
    compiled = torch.compile(mlp, fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager)
    params = [x, *mlp.parameters()]
    for a, b in zip(torch.autograd.grad(compiled, params, g), torch.autograd.grad(eager, params, g)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("shape", [(4, 7, 16), (3, 33)])
def test_rms_norm_backward_matches_float64_autograd(shape):
    """The CPU custom backward (fp32) against autograd through F.rms_norm in float64."""
    torch.manual_seed(1)
    norm = RMSNorm(shape[-1])
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (3 * torch.randn(*shape)).requires_grad_()
    g = torch.randn(*shape)
    y = norm(x)
    dx, dw = torch.autograd.grad(y, (x, norm.weight), g)
    x64, w64 = x.detach().double().requires_grad_(), norm.weight.detach().double().requires_grad_()
    y64 = F.rms_norm(x64, (shape[-1],), w64, norm.eps)
    dx64, dw64 = torch.autograd.grad(y64, (x64, w64), g.double())
    for ours, ref in ((y, y64), (dx, dx64), (dw, dw64)):
        assert ((ours.double() - ref).abs().max() / ref.abs().max()).item() < 1e-6


@pytest.mark.skipif(not hasattr(torch.ops.aten, "_fused_rms_norm"), reason="torch < 2.8 has no fused rms_norm")
def test_rms_norm_custom_backward_gradcheck_float64():
    from zoo_core.loop.layers import _RMSNormFn

    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(5, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: _RMSNormFn.apply(a, b, 1e-5), (x, w))


def test_block_mlp_options_hidden_act_bias():
    import math

    from zoo_core.blocks import PreNormBlock, PreNormBlockConfig
    from zoo_core.errors import UserError

    class Zero(torch.nn.Module):  # a mixer that adds nothing: the block is x + mlp(norm(x))
        wants_mlp = True

        def forward(self, x, state=None, return_state=False):
            return torch.zeros_like(x), None

    torch.manual_seed(0)
    block = PreNormBlock(16, Zero(), PreNormBlockConfig(mlp_hidden=24, mlp_act="gelu_tanh", mlp_bias=True), 0, 1)
    block.double()
    assert block.mlp.w_in.weight.shape == (48, 16) and block.mlp.w_out.bias is not None
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    h = block.mlp_norm(x) @ block.mlp.w_in.weight.t() + block.mlp.w_in.bias
    gate, value = h[..., :24], h[..., 24:]
    gelu = 0.5 * gate * (1 + torch.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate**3)))
    want = x + (gelu * value) @ block.mlp.w_out.weight.t() + block.mlp.w_out.bias
    assert torch.allclose(block(x)[0], want, rtol=1e-12, atol=1e-12)
    with pytest.raises(UserError, match="mlp_act"):
        PreNormBlock(16, Zero(), PreNormBlockConfig(mlp_act="relu"), 0, 1)


def test_block_mlp_false_drops_the_channel_mlp():
    """model.block.mlp=false: norm + mixer + residual only (Zoology's state_mixer: Identity);
    null follows the mixer's wants_mlp."""
    from zoo_core.config import load_config, resolve
    from zoo_core.model import build_model
    from zoo_core.registry import get_registry

    reg = get_registry()
    sizes = {}
    for mlp in ("null", "false", "true"):
        cfg = resolve(load_config(None, ["model.dim=16", "model.n_layers=2", f"model.block.mlp={mlp}"]), reg)
        model = build_model(cfg, reg, 64)
        sizes[mlp] = (model.num_params(), all(layer.mlp is None for layer in model.layers), model.flops_per_token(8))
    assert sizes["false"][1] and not sizes["true"][1] and sizes["null"] == sizes["true"]  # attention wants one
    assert sizes["false"][0] < sizes["true"][0] and sizes["false"][2] < sizes["true"][2]


@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
def test_swiglu_fused_gate_equals_the_plain_forms(act, monkeypatch):
    """With zoo-kernels installed SwiGLU runs its fused gated activation (one C pass each way on
    CPU); ZOO_FUSED_LAYERS=0 gives the plain forms: same values and gradients in float64."""
    from zoo_core.blocks import SwiGLU
    from zoo_core.loop import layers

    assert layers._fused("glu") is not None  # the repo installs zoo-kernels with every plugin
    torch.manual_seed(0)
    mlp = SwiGLU(8, 12, act=act).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 5, 8, dtype=torch.float64)
    params = [x, *mlp.parameters()]
    fused = mlp(x)
    monkeypatch.setenv("ZOO_FUSED_LAYERS", "0")
    assert layers._fused("glu") is None
    plain = mlp(x)
    torch.testing.assert_close(fused, plain, rtol=1e-13, atol=1e-13)
    for a, b in zip(torch.autograd.grad(fused, params, g), torch.autograd.grad(plain, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


def test_rms_norm_fused_equals_the_plain_forms_and_gives_bf16_under_autocast(monkeypatch):
    """With zoo-kernels the CPU RMSNorm is one C pass each way; ZOO_FUSED_LAYERS=0 gives _RMSNormFn.
    Under CPU bf16 autocast the fused norm writes bf16 (what the next matmul reads), computed in fp32."""
    from zoo_core.loop import layers

    torch.manual_seed(0)
    norm = RMSNorm(16).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 7, 16, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 7, 16, dtype=torch.float64)
    fused = norm(x)
    grads = torch.autograd.grad(fused, [x, norm.weight], g)
    monkeypatch.setenv("ZOO_FUSED_LAYERS", "0")
    plain = norm(x)
    torch.testing.assert_close(fused, plain, rtol=1e-13, atol=1e-13)
    for a, b in zip(grads, torch.autograd.grad(plain, [x, norm.weight], g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    monkeypatch.delenv("ZOO_FUSED_LAYERS")
    norm32, x32 = norm.float(), x.detach().float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm32(x32)
    assert y.dtype == torch.bfloat16
    assert ((y.double() - plain.detach()).abs() <= plain.detach().abs() * 2**-8 + 1e-6).all()
    assert layers._fused("rms_norm") is not None
