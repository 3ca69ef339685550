"""minGRU and minLSTM: the scan, the step and the paper's loop agree (outputs and
gradients, with a carried state), outputs are causal, state carries across
segments, and a tiny model learns Shakespeare."""

import json

import pytest
import torch

from zoo_core.errors import UserError
from zoo_core.testing.build import step_through
from zoo_mingru import MinGRU, MinGRUConfig, MinLSTM, MinLSTMConfig
from zoo_mingru.reference import naive_min_rnn

KINDS = {"mingru": (MinGRU, MinGRUConfig), "minlstm": (MinLSTM, MinLSTMConfig)}
VARIANTS = [{}, {"conv": 4, "out_gate": True, "expand": 2.0}, {"log_space": False, "conv": 3}]
CASES = [(k, v) for k in KINDS for v in VARIANTS]
DIM = 16


def make(kind, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cls, cfg = KINDS[kind]
    return cls(DIM, cfg(**kw)).to(dtype)


def random_state(m, batch, dtype=torch.float64):
    """A state as a previous segment could leave it (h > 0 in log space)."""
    st = m.init_state(batch, dtype=dtype)
    st["h"] = torch.rand_like(st["h"]) + 0.1 if m.config.log_space else torch.randn_like(st["h"])
    if "conv" in st:
        st["conv"] = torch.randn_like(st["conv"])
    return st


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def grads(m, x, y, g):
    return torch.autograd.grad(y, [x, *m.parameters()], g)


@pytest.mark.parametrize("kind,kw", CASES)
def test_scan_equals_step_and_naive_with_gradients(kind, kw):
    m = make(kind, **kw)
    T = 70 if not kw else 19  # 70 crosses the chunked scan's chunk boundary
    x = torch.randn(2, T, DIM, dtype=torch.float64, requires_grad=True)
    st = random_state(m, 2)
    y_fast, st_fast = m(x, st, return_state=True)
    g = torch.randn_like(y_fast)
    y_naive = naive_min_rnn(m, x, st)
    y_step, st_step = step_through(m, x, st)
    assert rel(y_fast, y_naive) < 1e-10 and rel(y_step, y_naive) < 1e-10
    for key in st_fast:
        assert rel(st_fast[key], st_step[key]) < 1e-10, key
    ref = grads(m, x, y_naive, g)
    for other in (grads(m, x, y_fast, g), grads(m, x, y_step, g)):
        assert all(rel(a, b) < 1e-9 for a, b in zip(other, ref))


@pytest.mark.parametrize("kind", KINDS)
def test_float32_scan_matches_float64_definition(kind):
    m = make(kind, torch.float32, conv=4)
    x = torch.randn(2, 40, DIM)
    y32, _ = m(x)
    y64 = naive_min_rnn(m.double(), x.double())
    assert rel(y32.double(), y64) < 1e-5


@pytest.mark.parametrize("kind,kw", CASES)
def test_causal(kind, kw):
    m = make(kind, **kw)
    x = torch.randn(1, 12, DIM, dtype=torch.float64)
    y1, _ = m(x)
    x2 = x.clone()
    x2[:, 7] += 1.0
    y2, _ = m(x2)
    assert torch.equal(y1[:, :7], y2[:, :7]) and not torch.allclose(y1[:, 7:], y2[:, 7:])


@pytest.mark.parametrize("kind,kw", CASES)
def test_state_carry_equals_whole_sequence(kind, kw):
    m = make(kind, **kw)
    x = torch.randn(2, 23, DIM, dtype=torch.float64)
    whole, st_whole = m(x, return_state=True)
    a, st = m(x[:, :9], return_state=True)
    b, st_end = m(x[:, 9:], st, return_state=True)
    assert rel(torch.cat([a, b], 1), whole) < 1e-10
    assert all(rel(st_end[k], st_whole[k]) < 1e-10 for k in st_whole)
    # starting from init_state is starting from nothing
    from_init, _ = m(x, m.init_state(2))
    assert rel(from_init, whole) < 1e-10


@pytest.mark.parametrize("kind,kw", CASES)
def test_state_size_is_the_bytes_of_the_state(kind, kw):
    m = make(kind, torch.float32, **kw)
    _, st = m(torch.randn(3, 5, DIM), return_state=True)
    nbytes = sum(t.numel() * t.element_size() for t in st.values()) // 3
    assert m.state_size(5) == m.state_size(5000) == nbytes
    assert m.flops_per_token(64) > 2 * 3 * DIM * m.hidden


def test_log_space_state_stays_positive():
    m = make("mingru")
    _, st = m(torch.randn(2, 30, DIM, dtype=torch.float64) * 5, return_state=True)
    assert (st["h"] > 0).all()


@pytest.mark.parametrize("kw", [{"expand": 0}, {"conv": -1}])
def test_bad_options_name_the_problem(kw):
    with pytest.raises(UserError, match=next(iter(kw))):
        make("mingru", **kw)


# -- training on Shakespeare bytes ------------------------------------------------------------


def tiny(tmp_path, mixer, *extra):
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
        f"model.mixer.name={mixer}",
        *extra,
    ]


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


@pytest.mark.parametrize("kind", KINDS)
def test_loss_drops_on_shakespeare(tmp_path, kind):
    from zoo_core.train import train

    train(None, tiny(tmp_path, kind, "train.steps=40", "optim.lr=1e-2"))
    loss = losses(tmp_path / "t")
    assert len(loss) == 40 and loss[-1] < loss[0] - 1.0, loss


@pytest.mark.parametrize("kind", KINDS)
def test_trains_with_carried_state_and_conv(tmp_path, kind):
    from zoo_core.train import train

    train(
        None,
        tiny(
            tmp_path, kind, "train.steps=4", "train.carry_state=true", "model.mixer.conv=4", "model.mixer.out_gate=true"
        ),
    )
    loss = losses(tmp_path / "t")
    assert len(loss) == 4 and all(l == l and l < 10 for l in loss)


@pytest.mark.parametrize("kind,kw", [("mingru", VARIANTS[1]), ("minlstm", VARIANTS[2])])
def test_conformance_kit_with_conv_variants(kind, kw):
    # The core's suite runs the kit on the defaults; these are the options it does not see.
    from zoo_core.testing import check_mixer

    cls, cfg = KINDS[kind]
    check_mixer(cls, cfg(**kw), name=kind).raise_for_failures()


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: there the fast path runs zoo-kernels' Triton scans"
)
@pytest.mark.parametrize("kind,kw", CASES)
def test_cuda_fast_path_matches_naive(kind, kw):
    m = make(kind, **kw)  # float64 on CPU: the reference
    x = torch.randn(2, 100, DIM, dtype=torch.float64, requires_grad=True)
    st = random_state(m, 2)
    y_ref = naive_min_rnn(m, x, st)
    g = torch.randn_like(y_ref)
    (gx_ref,) = torch.autograd.grad(y_ref, x, g)
    mc = m.float().cuda()
    xc = x.detach().float().cuda().requires_grad_()
    y, _ = mc(xc, {k: v.float().cuda() for k, v in st.items()})
    (gx,) = torch.autograd.grad(y, xc, g.float().cuda())
    assert rel(y.double().cpu(), y_ref) < 1e-4 and rel(gx.double().cpu(), gx_ref) < 1e-4
