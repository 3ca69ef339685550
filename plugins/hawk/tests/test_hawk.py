"""Hawk: the RG-LRU scan, the step and the paper's loop agree (outputs and
gradients, with a carried state), the decay at init lies in [0.9, 0.999],
outputs are causal, state carries, and Hawk and Griffin learn Shakespeare."""

import json
from pathlib import Path

import pytest
import torch

from zoo_core.errors import UserError
from zoo_core.testing.build import step_through
from zoo_hawk import Hawk, HawkConfig
from zoo_hawk.mixer import init_decay_param
from zoo_hawk.reference import naive_hawk

DIM = 16
GRIFFIN_YAML = Path(__file__).resolve().parents[1] / "configs" / "griffin.yaml"


def make(dtype=torch.float64, dim=DIM, **kw):
    torch.manual_seed(0)
    return Hawk(dim, HawkConfig(**kw)).to(dtype)


def random_state(m, batch):
    st = m.init_state(batch, dtype=torch.float64)
    # "start" (reset_at_start): a random mix of rows that begin a document and rows that go on
    return {k: torch.randn_like(v) if v.is_floating_point() else torch.rand(v.shape) < 0.5 for k, v in st.items()}


def rel(a, b):
    if a.dtype == torch.bool:
        return float((a != b).any())
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def grads(m, x, y, g):
    return torch.autograd.grad(y, [x, *m.parameters()], g)


@pytest.mark.parametrize(
    "T,kw",
    [
        (70, {}),
        (13, {"conv": 2, "expand": 2.0}),
        (13, {"gate_heads": 4, "expand": 1.5, "bias": True}),
        (13, {"reset_at_start": True, "gate_heads": 2, "expand": 1.0}),
        (1, {"reset_at_start": True}),
    ],
)
def test_scan_equals_step_and_naive_with_gradients(T, kw):
    m = make(**kw)
    x = torch.randn(2, T, DIM, dtype=torch.float64, requires_grad=True)
    st = random_state(m, 2)
    y_fast, st_fast = m(x, st, return_state=True)
    g = torch.randn_like(y_fast)
    y_naive = naive_hawk(m, x, st)
    y_step, st_step = step_through(m, x, st)
    assert rel(y_fast, y_naive) < 1e-10 and rel(y_step, y_naive) < 1e-10
    assert all(rel(st_fast[k], st_step[k]) < 1e-10 for k in st_fast)
    ref = grads(m, x, y_naive, g)
    for other in (grads(m, x, y_fast, g), grads(m, x, y_step, g)):
        assert all(rel(a, b) < 1e-8 for a, b in zip(other, ref))


def test_float32_scan_matches_float64_definition():
    m = make(torch.float32)
    x = torch.randn(2, 40, DIM)
    y32, _ = m(x)
    assert rel(y32.double(), naive_hawk(m.double(), x.double())) < 1e-5


def test_decay_at_init_is_in_the_papers_range():
    """sigmoid(Lambda) in [0.9, 0.999] with its square uniform, and the recurrence really
    decays by sigmoid(Lambda)^(c r): one step from h0 = 1 with no input and r = 1 gives a^c."""
    from zoo_core.testing.build import materialise

    m = materialise(lambda: Hawk(64, HawkConfig(expand=32.0)))  # 2048 channels, init as the core does
    base = torch.sigmoid(m.a_param.double())
    assert base.min() >= 0.9 and base.max() <= 0.999
    sq = base**2
    lo, hi = 0.9**2, 0.999**2
    # spread over the whole ring [lo, hi] with the mean of U[lo, hi] (2048 draws; a uniform in a
    # instead of a^2 differs by less than sampling noise here, so it is not told apart)
    assert sq.min() < lo + 0.01 and sq.max() > hi - 0.01
    assert abs(sq.mean().item() - (lo + hi) / 2) < 0.01
    assert (sq < (lo + hi) / 2).float().mean().item() == pytest.approx(0.5, abs=0.05)
    from zoo_kernels import rg_lru

    H = m.hidden
    ones = torch.ones(1, 1, H)
    h1, _ = rg_lru(torch.zeros(1, 1, H), 30 * ones, ones, m.a_param.detach(), m.config.c, h0=torch.ones(1, H))
    decay = h1[0, 0].double() ** (1 / m.config.c)
    assert decay.min() >= 0.9 - 1e-6 and decay.max() <= 0.999 + 1e-6
    assert torch.allclose(decay, base, rtol=1e-5)


def test_decay_init_is_uniform_in_the_square():
    """With many draws, a^2 (not a) is uniform: half of a^2 lies below the midpoint of
    [0.9^2, 0.999^2] (uniform a would put 51.3% there; the sampling std is 0.1%)."""
    lo, hi = 0.9, 0.999
    sq = torch.sigmoid(init_decay_param(200_000, lo, hi, torch.Generator().manual_seed(0))) ** 2
    assert abs((sq < (lo**2 + hi**2) / 2).double().mean().item() - 0.5) < 0.005


def test_causal():
    m = make()
    x = torch.randn(1, 12, DIM, dtype=torch.float64)
    y1, _ = m(x)
    x2 = x.clone()
    x2[:, 7] += 1.0
    y2, _ = m(x2)
    assert torch.equal(y1[:, :7], y2[:, :7]) and not torch.allclose(y1[:, 7:], y2[:, 7:])


def test_state_carry_equals_whole_sequence():
    m = make()
    x = torch.randn(2, 23, DIM, dtype=torch.float64)
    whole, st_whole = m(x, return_state=True)
    a, st = m(x[:, :2], return_state=True)  # shorter than the conv: the conv state mixes both
    b, st = m(x[:, 2:9], st, return_state=True)
    c, st_end = m(x[:, 9:], st, return_state=True)
    assert rel(torch.cat([a, b, c], 1), whole) < 1e-10
    assert all(rel(st_end[k], st_whole[k]) < 1e-10 for k in st_whole)
    assert rel(m(x, m.init_state(2))[0], whole) < 1e-10


def test_state_size_is_the_bytes_of_the_state():
    m = make(torch.float32)
    _, st = m(torch.randn(3, 5, DIM), return_state=True)
    nbytes = sum(t.numel() * t.element_size() for t in st.values()) // 3
    assert m.state_size(5) == m.state_size(5000) == nbytes
    assert m.flops_per_token(64) > 2 * DIM * m.hidden * 4


@pytest.mark.parametrize("kw,word", [({"conv": 0}, "conv"), ({"decay_min": 0.99, "decay_max": 0.9}, "decay")])
def test_bad_options_name_the_problem(kw, word):
    with pytest.raises(UserError, match=word):
        make(**kw)


def test_griffin_preset_pattern():
    from zoo_core.config import layer_mixers, load_config, resolve
    from zoo_core.registry import get_registry

    cfg = resolve(load_config(str(GRIFFIN_YAML), ["model.n_layers=6"]), get_registry())
    names = [(m["name"], m.get("window")) for m in layer_mixers(cfg.model)]
    assert names == [("hawk", None), ("hawk", None), ("attention", 1024)] * 2
    assert all(m["n_kv_heads"] == 1 for m in layer_mixers(cfg.model) if m["name"] == "attention")


# -- training on Shakespeare bytes -------------------------------------------------------------


def tiny(tmp_path, *extra):
    return [
        f"runs_dir={tmp_path}",
        "name=t",
        "model.dim=32",
        "model.n_layers=2",
        "data.seq_len=32",
        "train.global_batch=4",
        "train.eval_every=0",
        "train.sample_tokens=0",
        "train.progress=false",
        "train.log_every=1",
        "train.threads=1",
        "train.eval_batches=1",
        "train.eval_batch_size=4",
        "optim.warmup_steps=2",
        *extra,
    ]


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def test_hawk_loss_drops_on_shakespeare(tmp_path):
    from zoo_core.train import train

    train(None, tiny(tmp_path, "model.mixer.name=hawk", "train.steps=40", "optim.lr=1e-2"))
    loss = losses(tmp_path / "t")
    assert len(loss) == 40 and loss[-1] < loss[0] - 1.0, loss


def test_hawk_trains_with_carried_state(tmp_path):
    from zoo_core.train import train

    train(None, tiny(tmp_path, "model.mixer.name=hawk", "train.steps=4", "train.carry_state=true"))
    loss = losses(tmp_path / "t")
    assert len(loss) == 4 and all(l == l and l < 10 for l in loss)


def test_griffin_config_trains(tmp_path):
    from zoo_core.train import train

    train(
        str(GRIFFIN_YAML),
        tiny(tmp_path, "model.n_layers=3", "train.steps=30", "optim.lr=1e-2", "train.carry_state=true"),
    )
    loss = losses(tmp_path / "t")
    assert len(loss) == 30 and loss[-1] < loss[0] - 1.0, loss


def test_conformance_kit_with_other_options():
    # The core's suite runs the kit on the defaults.
    from zoo_core.testing import check_mixer

    check_mixer(Hawk, HawkConfig(conv=2, expand=1.0), name="hawk").raise_for_failures()
    check_mixer(
        Hawk, HawkConfig(gate_heads=4, expand=1.0, bias=True, reset_at_start=True), name="hawk"
    ).raise_for_failures()


def test_reset_at_start_is_a_first_token_with_multiplier_one():
    m = make(reset_at_start=True)
    x = torch.randn(2, 9, DIM, dtype=torch.float64)
    y, _ = m(x)
    plain = make()  # the same weights (same seed), without the reset
    plain.load_state_dict(m.state_dict())
    y_plain, _ = plain(x)
    assert rel(y[:, 0], y_plain[:, 0]) > 1e-3  # h_0 = i_0 u_0, not sqrt(1 - a_0^2) i_0 u_0
    # from a state carried over (no document start) it is the ordinary RG-LRU
    st = random_state(m, 2)
    st["start"][:] = False
    assert rel(m(x, st)[0], plain(x, {k: v for k, v in st.items() if k != "start"})[0]) < 1e-12


def test_gate_heads_must_divide_the_width():
    with pytest.raises(UserError, match="gate_heads"):
        make(gate_heads=5)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: there the fast path runs zoo-kernels' Triton RG-LRU"
)
def test_cuda_fast_path_matches_naive():
    m = make()  # float64 on CPU: the reference
    x = torch.randn(2, 100, DIM, dtype=torch.float64, requires_grad=True)
    st = random_state(m, 2)
    y_ref = naive_hawk(m, x, st)
    g = torch.randn_like(y_ref)
    (gx_ref,) = torch.autograd.grad(y_ref, x, g)
    mc = m.float().cuda()
    xc = x.detach().float().cuda().requires_grad_()
    y, _ = mc(xc, {k: v.float().cuda() for k, v in st.items()})
    (gx,) = torch.autograd.grad(y, xc, g.float().cuda())
    assert rel(y.double().cpu(), y_ref) < 1e-4 and rel(gx.double().cpu(), gx_ref) < 1e-4
