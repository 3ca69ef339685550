"""Against transformers' Qwen3-Next Gated DeltaNet layer, built from a config (no hub), its
torch-only delta rule forced (transformers would take fla's Triton kernels, which do not run
on CPU), with our weights copied in: the same outputs (float32: it computes the decay and
the norm in float32)."""

import pytest
import torch
from deltanet_checks import import_qwen3_next, rel

qwen3_next = import_qwen3_next()

from zoo_deltanet import GatedDeltaNet, GatedDeltaNetConfig  # noqa: E402
from zoo_deltanet.hf import qwen3_next_config_kwargs, to_qwen3_next  # noqa: E402


@pytest.fixture
def torch_only(monkeypatch):
    for name in ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule"):
        fn = getattr(qwen3_next, name)
        monkeypatch.setattr(qwen3_next, name, getattr(fn, "__wrapped__", fn))


@pytest.mark.parametrize(
    "kw", [{"n_heads": 2, "head_k_dim": 8}, {"n_heads": 3, "head_k_dim": 4, "conv": 2, "expand_v": 1.5}]
)
def test_qwen3_next_layer_with_our_weights_computes_the_same(torch_only, kw):
    from transformers import Qwen3NextConfig

    torch.manual_seed(0)
    ours = GatedDeltaNet(32, GatedDeltaNetConfig(chunk_size=16, **kw))
    with torch.no_grad():  # a non-trivial norm weight and decays
        ours.norm_weight.uniform_(0.5, 1.5)
    cfg = Qwen3NextConfig(
        **qwen3_next_config_kwargs(ours),
        num_hidden_layers=1,
        layer_types=["linear_attention"],
        rms_norm_eps=ours.config.norm_eps,
        hidden_act="silu",
    )
    theirs = qwen3_next.Qwen3NextGatedDeltaNet(cfg, 0)
    theirs.load_state_dict(to_qwen3_next(ours), strict=True)
    x = torch.randn(2, 40, 32)
    with torch.no_grad():
        y_ours, _ = ours(x)
        y_theirs = theirs(x)
    assert rel(y_ours, y_theirs) < 1e-5
