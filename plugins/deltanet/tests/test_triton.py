"""The Triton forward kernel against the float64 recurrence. Without a GPU it runs under
TRITON_INTERPRET=1 (conftest.py), so the shapes are tiny. Its backward is the chunked
PyTorch path recomputed (there is no Triton backward kernel): the gradient checks here
check that wiring, not a kernel."""

import pytest
import torch
from deltanet_checks import DOCS, doc_resets, outputs_and_grads, rel, rule_inputs, separately

from zoo_deltanet import DeltaNet, DeltaNetConfig, GatedDeltaNet, GatedDeltaNetConfig
from zoo_deltanet.reference import naive_delta_rule, naive_mixer
from zoo_deltanet.triton_chunk import chunk_delta_rule_triton, triton_installed

pytestmark = pytest.mark.skipif(
    not triton_installed(), reason="triton is not importable (pip install 'zoo-deltanet[triton]')"
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def narrow_columns(monkeypatch):
    """16 state columns per program, so d_v = 20 spans two column blocks, the last partial."""
    from zoo_deltanet import triton_kernel

    monkeypatch.setattr(triton_kernel, "MAX_BV", 16)


def naive(q, k, v, beta, log_a, h0, resets=None):
    return naive_delta_rule(q, k, v, beta, None if log_a is None else log_a.exp(), h0, resets=resets)


def on_device(args):
    return [None if t is None else t.to(DEVICE) for t in args]


@pytest.mark.parametrize("gated,h0", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_kernel_equals_recurrence(narrow_columns, gated, h0, dtype, tol):
    """T = 37 over chunks of 16 (the last partial), d_k = 5 padded to 16, d_v = 20 in two blocks."""
    args = rule_inputs(B=1, T=37, H=2, K=5, V=20, gated=gated, h0=h0)
    o_ref, h_ref = naive(*args)
    o, h = chunk_delta_rule_triton(
        *[None if t is None else t.to(DEVICE, dtype) for t in args[:5]],
        16,
        None if args[5] is None else args[5].to(DEVICE, dtype),
    )
    assert o.dtype == dtype and rel(o.cpu(), o_ref) < tol and rel(h.cpu(), h_ref) < tol


def test_kernel_chunk_of_32_and_its_gradients():
    args = on_device(rule_inputs(B=2, T=40, H=1, K=16, V=16))
    o_ref, h_ref, g_ref = outputs_and_grads(naive, args)
    o, h, g = outputs_and_grads(lambda *a: chunk_delta_rule_triton(*a[:5], 32, a[5]), args)
    assert rel(o, o_ref) < 1e-12 and rel(h, h_ref) < 1e-12
    assert all(rel(a, b) < 1e-10 for a, b in zip(g, g_ref))


def test_kernel_refuses_a_chunk_it_cannot_take():
    with pytest.raises(ValueError, match="power of two"):
        chunk_delta_rule_triton(*rule_inputs(T=4)[:5], 24)


def test_mixer_with_the_triton_backend_equals_naive():
    torch.manual_seed(0)
    m = GatedDeltaNet(16, GatedDeltaNetConfig(n_heads=2, head_k_dim=4, chunk_size=16, backend="triton"))
    m = m.double().to(DEVICE)
    x = torch.randn(1, 20, 16, dtype=torch.float64, device=DEVICE)
    st = {k: torch.randn_like(v) for k, v in m.init_state(1).items()}
    y, _ = m(x, st)
    assert rel(y, naive_mixer(m, x, st)) < 1e-12


def test_the_op_traces_under_torch_compile():
    """A fake kernel and a registered autograd: aot_eager captures it with no graph break."""
    args = on_device(rule_inputs(B=1, T=20, H=1, K=4, V=4))
    fn = lambda *a: chunk_delta_rule_triton(*a[:5], 16, a[5])  # noqa: E731
    o_ref, h_ref, g_ref = outputs_and_grads(fn, args)
    torch._dynamo.reset()
    o, h, g = outputs_and_grads(torch.compile(fn, backend="aot_eager", fullgraph=True), args)
    assert rel(o, o_ref) < 1e-12 and all(rel(a, b) < 1e-12 for a, b in zip(g, g_ref))


@pytest.mark.parametrize("gated", [False, True])
def test_kernel_with_document_starts_equals_separate_documents(narrow_columns, gated):
    """Packed rows (starts inside chunks of 16, on a chunk boundary, at t = 0, a continued first
    document) against each document run alone, and against the packed recurrence; d_v = 20 in
    two column blocks. Gradients: the recomputed chunked backward with the same starts."""
    resets, _ = doc_resets()
    args = on_device(rule_inputs(B=len(DOCS), T=resets.shape[1], H=2, K=5, V=20, gated=gated))
    resets = resets.to(DEVICE)
    o, h, g = outputs_and_grads(lambda *a: chunk_delta_rule_triton(*a[:5], 16, a[5], resets=resets), args)
    for want in (
        outputs_and_grads(separately(lambda *a: chunk_delta_rule_triton(*a[:5], 16, a[5])), args),
        outputs_and_grads(lambda *a: naive(*a[:5], a[5], resets), args),
    ):
        assert rel(o, want[0]) < 1e-12 and rel(h, want[1]) < 1e-12
        assert all(rel(a, b) < 1e-10 for a, b in zip(g, want[2]))


def test_kernel_with_document_starts_in_float32():
    resets, _ = doc_resets()
    args = rule_inputs(B=len(DOCS), T=resets.shape[1], H=1, K=8, V=8)
    o_ref, h_ref = naive(*args, resets)
    q, k, v, beta, log_a, h0 = (t.to(DEVICE, torch.float32) for t in args)
    o, h = chunk_delta_rule_triton(q, k, v, beta, log_a, 16, h0, resets=resets.to(DEVICE))
    assert o.dtype == torch.float32 and rel(o.cpu(), o_ref) < 1e-5 and rel(h.cpu(), h_ref) < 1e-5


@pytest.mark.parametrize("cls,cfg", [(DeltaNet, DeltaNetConfig), (GatedDeltaNet, GatedDeltaNetConfig)])
def test_mixer_with_the_triton_backend_and_resets_equals_naive(cls, cfg):
    """Packed documents through the mixer (conv and delta rule take the starts): the naive
    reference from the weights, and the chunked backend's outputs and gradients."""
    torch.manual_seed(0)
    m = cls(16, cfg(n_heads=2, head_k_dim=4, chunk_size=16, backend="triton")).double().to(DEVICE)
    resets, _ = doc_resets()
    resets = resets.to(DEVICE)
    x = torch.randn(len(DOCS), resets.shape[1], 16, dtype=torch.float64, device=DEVICE, requires_grad=True)
    st = {k: torch.randn_like(v) for k, v in m.init_state(len(DOCS)).items()}
    y = m(x, st, resets=resets)[0]
    assert rel(y, naive_mixer(m, x, st, resets)) < 1e-12
    gy = torch.randn_like(y)
    g = torch.autograd.grad(y, [x, *m.parameters()], gy)
    m.config.backend = "chunked"
    y_ref = m(x, st, resets=resets)[0]
    g_ref = torch.autograd.grad(y_ref, [x, *m.parameters()], gy)
    assert rel(y, y_ref) < 1e-12 and all(rel(a, b) < 1e-10 for a, b in zip(g, g_ref))
