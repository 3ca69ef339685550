"""Outside oracle: transformers' MambaMixer and Mamba2Mixer with zoo's weights copied in,
in float64, outputs and gradients, every zoo path (naive, chunked, step)."""

import pytest
import torch

from zoo_core.testing.hf import hf_float64, require_transformers
from zoo_mamba import Mamba, Mamba2, Mamba2Config, MambaConfig

transformers = require_transformers()
f64 = torch.float64


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def randomize(module, seed=0):
    """Weights far from init, so every term (D skip, dt bias, norm weight) shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(
                torch.randn(p.shape, generator=g, dtype=f64) * 0.5
                if p.dim() > 1
                else torch.rand(p.shape, generator=g, dtype=f64) + 0.5
            )
    return module


def run_zoo(m, x, path):
    if path == "step":
        state = m.init_state(x.shape[0], dtype=x.dtype)
        outs = []
        for t in range(x.shape[1]):
            y, state = m.step(x[:, t], state)
            outs.append(y)
        return torch.stack(outs, 1)
    return m(x)[0]


def compare(zoo, hf, pairs, path, T=11):
    """pairs: (zoo parameter, hf parameter) that hold the same numbers (up to a reshape)."""
    x = torch.randn(2, T, zoo.dim, dtype=f64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(2, T, zoo.dim, dtype=f64, generator=torch.Generator().manual_seed(2))
    xz, xh = x.clone().requires_grad_(), x.clone().requires_grad_()
    yz = run_zoo(zoo, xz, path)
    with hf_float64():
        yh = hf(xh)
    assert rel(yz, yh) < 1e-12
    zp, hp = [p for p, _ in pairs], [q for _, q in pairs]
    gz = torch.autograd.grad((yz * w).sum(), [xz, *zp])
    with hf_float64():
        gh = torch.autograd.grad((yh * w).sum(), [xh, *hp])
    assert rel(gz[0], gh[0]) < 1e-11, "input gradient"
    for i, (a, b) in enumerate(zip(gz[1:], gh[1:])):
        assert rel(a, b.reshape(a.shape)) < 1e-10, f"gradient of parameter {i}"


def mamba2_pair(dim=16, headdim=8, ngroups=2, d_state=8, path="chunked"):
    backend = "naive" if path == "naive" else "chunked"
    zoo = randomize(
        Mamba2(dim, Mamba2Config(headdim=headdim, d_state=d_state, ngroups=ngroups, chunk_size=4, backend=backend)).to(
            f64
        )
    )
    cfg = transformers.Mamba2Config(
        hidden_size=dim,
        state_size=d_state,
        expand=2,
        head_dim=headdim,
        num_heads=zoo.n_heads,
        n_groups=ngroups,
        conv_kernel=4,
        chunk_size=4,
        use_bias=False,
        use_conv_bias=True,
        layer_norm_epsilon=1e-5,
        num_hidden_layers=1,
        vocab_size=8,
    )
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    hf = Mamba2Mixer(cfg, 0).to(f64).eval()
    pairs = [
        (zoo.in_proj.weight, hf.in_proj.weight),
        (zoo.conv_weight, hf.conv1d.weight),
        (zoo.conv_bias, hf.conv1d.bias),
        (zoo.dt_bias, hf.dt_bias),
        (zoo.A_log, hf.A_log),
        (zoo.D, hf.D),
        (zoo.norm.weight, hf.norm.weight),
        (zoo.out_proj.weight, hf.out_proj.weight),
    ]
    with torch.no_grad():
        for p, q in pairs:
            q.copy_(p.reshape(q.shape))
    return zoo, hf, pairs


@pytest.mark.parametrize("path", ["naive", "chunked", "step"])
@pytest.mark.parametrize("ngroups,headdim", [(1, 8), (2, 8), (4, 4)])
def test_mamba2_equals_transformers_mamba2_mixer(ngroups, headdim, path):
    # ngroups > 1 caught the whole-width gated norm (0.31 off in outputs, 0.46 in gradients):
    # transformers, like mamba-ssm's RMSNormGated, normalises per group of d_inner / ngroups.
    zoo, hf, pairs = mamba2_pair(headdim=headdim, ngroups=ngroups, path=path)
    compare(zoo, hf, pairs, path)


def test_mamba2_gated_norm_is_per_group():
    zoo, _, _ = mamba2_pair(ngroups=2)
    y, z = torch.randn(3, 32, dtype=f64), torch.randn(3, 32, dtype=f64)
    y[:, 16:] *= 100  # a loud second group must not change the first group's output
    out = zoo.norm(y, z)
    alone = zoo.norm(torch.cat([y[:, :16], y[:, :16]], -1), torch.cat([z[:, :16], z[:, :16]], -1))
    assert torch.allclose(out[:, :16], alone[:, :16], rtol=1e-13, atol=0)


def mamba1_pair(dim=16, d_state=4, dt_rank=3, bias=True, path="chunked"):
    backend = "naive" if path == "naive" else "chunked"
    zoo = randomize(Mamba(dim, MambaConfig(d_state=d_state, dt_rank=dt_rank, bias=bias, backend=backend)).to(f64))
    with torch.no_grad():  # A = -exp(A_log) near the S4D init: a decay that matters, not one that vanishes
        zoo.A_log.copy_(torch.log(torch.arange(1, d_state + 1, dtype=f64)).repeat(zoo.d_inner) * 0.5)
    cfg = transformers.MambaConfig(
        hidden_size=dim,
        state_size=d_state,
        expand=2,
        conv_kernel=4,
        time_step_rank=dt_rank,
        use_bias=bias,
        use_conv_bias=True,
        num_hidden_layers=1,
        vocab_size=8,
    )
    from transformers.models.mamba.modeling_mamba import MambaMixer

    hf = MambaMixer(cfg, 0).to(f64).eval()
    pairs = [
        (zoo.in_proj.weight, hf.in_proj.weight),
        (zoo.in_proj.bias, hf.in_proj.bias),
        (zoo.conv_weight, hf.conv1d.weight),
        (zoo.conv_bias, hf.conv1d.bias),
        (zoo.x_proj.weight, hf.x_proj.weight),
        (zoo.dt_proj.weight, hf.dt_proj.weight),
        (zoo.dt_proj.bias, hf.dt_proj.bias),
        (zoo.A_log, hf.A_log),
        (zoo.D, hf.D),
        (zoo.out_proj.weight, hf.out_proj.weight),
        (zoo.out_proj.bias, hf.out_proj.bias),
    ]
    with torch.no_grad():
        for p, q in pairs:
            q.copy_(p.reshape(q.shape))
    return zoo, hf, pairs


@pytest.mark.parametrize("path", ["naive", "chunked", "step"])
def test_mamba_equals_transformers_mamba_mixer(path):
    zoo, hf, pairs = mamba1_pair(path=path)
    compare(zoo, hf, pairs, path)
