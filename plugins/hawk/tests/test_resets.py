"""Documents in Hawk: packed rows with `resets` equal each document run alone (float64,
outputs, final state and gradients of the input and every parameter) on the fast path; the
naive reference and the step with `reset` agree with it. Against RecurrentGemma with resets:
test_hf_oracle.py."""

import pytest
import torch

from zoo_core.testing.documents import assert_paths_agree_with_resets, packed_starts, spans
from zoo_hawk import Hawk, HawkConfig
from zoo_hawk.reference import naive_hawk

f64 = torch.float64
DIM = 16


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
    m, resets = make(**kw), packed_starts(T)
    x = torch.randn(3, T, DIM, dtype=f64, requires_grad=True)
    st = incoming(m, 3)
    params = list(m.parameters())
    y, last = m(x, st, return_state=True, resets=resets)
    G, Gs = torch.randn_like(y), torch.randn_like(flat(last))
    packed = [y, flat(last), *torch.autograd.grad((y * G).sum() + (flat(last) * Gs).sum(), [x, *params])]
    ys, lasts, loss = torch.zeros_like(y), [], 0
    for b in range(3):
        for a, e in spans(resets[b]):
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
    resets = packed_starts(T)
    x = torch.randn(3, T, DIM, dtype=f64, requires_grad=True)
    st = incoming(m, 3)
    assert_paths_agree_with_resets(m, naive_hawk, x, st, resets)


def test_no_resets_keeps_the_stream():
    m = make()
    x = torch.randn(2, 9, DIM, dtype=f64)
    st = incoming(m, 2)
    a, sa = m(x, st, return_state=True)
    b, sb = m(x, st, return_state=True, resets=torch.zeros(2, 9, dtype=torch.bool))
    assert torch.equal(a, b) and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- whole models: Hawk layers, and Griffin once its attention honours resets ----------------------


def language_model(*overrides):
    from zoo_core.config import load_config, resolve
    from zoo_core.loop.model import build_model
    from zoo_core.registry import get_registry

    registry = get_registry()
    cfg = resolve(load_config(None, ["model.dim=16", "model.n_layers=3", *overrides]), registry)
    torch.manual_seed(0)
    return build_model(cfg, registry, vocab_size=11).to(f64)


def model_packed_equals_separate(model, T=12):
    """Logits and every parameter's gradient: packed rows with resets == each document alone
    (its first token marked as a start; a row's first document without a start at 0 goes on
    from the initial state unmarked)."""
    resets = packed_starts(T)
    tokens = torch.randint(0, 11, (3, T), generator=torch.Generator().manual_seed(3))
    params = [p for p in model.parameters() if p.requires_grad]
    logits = model.logits(tokens, resets=resets)[0]
    G = torch.randn_like(logits)
    packed = [logits, *torch.autograd.grad((logits * G).sum(), params, allow_unused=True)]
    alone, loss = torch.zeros_like(logits), 0
    for b in range(3):
        for a, e in spans(resets[b]):
            first = None if a == 0 and not resets[b, 0] else torch.arange(e - a)[None] == 0
            out = model.logits(tokens[b : b + 1, a:e], resets=first)[0]
            alone[b : b + 1, a:e] = out.detach()
            loss = loss + (out * G[b : b + 1, a:e]).sum()
    separate = [alone, *torch.autograd.grad(loss, params, allow_unused=True)]
    for p, s in zip(packed, separate):
        if p is None or s is None:
            assert p is None and s is None
            continue
        assert (p.detach() - s).abs().max() <= 1e-12 * max(1.0, s.abs().max().item())


def test_hawk_model_packed_equals_separate_with_gradients():
    model_packed_equals_separate(language_model("model.mixer.name=hawk"))


def test_griffin_model_packed_equals_separate_with_gradients():
    from zoo_core.registry import get_registry

    attention = get_registry().get("mixers", "attention").factory
    if not getattr(attention, "supports_resets", False):
        pytest.skip("zoo-attention does not take resets yet: Griffin's recurrent layers are tested above")
    model_packed_equals_separate(language_model("model.preset=griffin"))
