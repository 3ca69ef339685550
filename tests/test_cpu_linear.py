"""parallel.cpu_linear: oneDNN linears agree with F.linear, gradients included, and fall back cleanly."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo_core import cpu_linear
from zoo_core.cpu_linear import Linear, apply_cpu_linear, linear, set_cpu_linear

needs_onednn = pytest.mark.skipif(cpu_linear.onednn_available() is not None,
                                  reason=f"oneDNN linear unavailable: {cpu_linear.onednn_available()}")


@pytest.fixture(autouse=True)
def _restore_mode():
    before = cpu_linear._use_onednn
    yield
    cpu_linear._use_onednn = before


def _grads(fn, x, w, b, g):
    out = fn(x, w, b)
    return [out, *torch.autograd.grad(out, [t for t in (x, w, b) if t is not None], g)]


@needs_onednn
@pytest.mark.parametrize("out_f,in_f", [(24, 8), (8, 24), (16, 16)])  # both weight-gradient forms
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_matches_float64_reference(out_f, in_f, bias):
    assert set_cpu_linear("onednn") is None
    torch.manual_seed(0)
    x = torch.randn(3, 7, in_f, requires_grad=True)
    w = torch.randn(out_f, in_f, requires_grad=True)
    b = torch.randn(out_f, requires_grad=True) if bias else None
    g = torch.randn(3, 7, out_f)
    ours = _grads(linear, x, w, b, g)
    ref = _grads(F.linear, *(t.double().detach().requires_grad_() if t is not None else None for t in (x, w, b)),
                 g.double())
    assert ours[0].dtype == torch.float32 and ours[0].shape == (3, 7, out_f)
    for a, r in zip(ours, ref):
        assert a.shape == r.shape
        torch.testing.assert_close(a.double(), r, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_non_contiguous_input_and_grad_layout():
    set_cpu_linear("onednn")
    x = torch.randn(8, 5, 6).transpose(0, 1).requires_grad_()  # (5, 8, 6), not contiguous
    w = torch.randn(4, 6, requires_grad=True)
    y = linear(x, w)
    y.sum().backward()
    torch.testing.assert_close(y, F.linear(x, w), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.grad, torch.ones(5, 8, 4).flatten(0, 1).t() @ x.detach().flatten(0, 1))


def test_other_dtypes_and_aten_mode_are_plain_f_linear():
    set_cpu_linear("onednn")
    x, w = torch.randn(4, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    assert torch.equal(linear(x, w), F.linear(x, w))  # float64 tests stay exact
    xb, wb = x.bfloat16(), w.bfloat16()
    assert torch.equal(linear(xb, wb), F.linear(xb, wb))
    set_cpu_linear("aten")
    xf, wf = x.float(), w.float()
    assert torch.equal(linear(xf, wf), F.linear(xf, wf))


class _Custom(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 2


def test_apply_swaps_plain_linears_only_and_keeps_the_state_dict():
    model = nn.Sequential(nn.Linear(4, 5), _Custom(5, 3), nn.Sequential(nn.Linear(3, 2, bias=False)))
    keys = list(model.state_dict())
    x = torch.randn(2, 4)
    before = model(x)
    apply_cpu_linear(model, "auto")
    assert [type(m) for m in (model[0], model[1], model[2][0])] == [Linear, _Custom, Linear]
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    fresh = nn.Linear(2, 2)
    apply_cpu_linear(fresh, "aten")
    assert type(fresh) is nn.Linear


def test_unavailable_onednn_says_why_in_one_line(monkeypatch, capsys):
    from zoo_core.parallelize import use_cpu_linear
    monkeypatch.setattr(cpu_linear, "onednn_available", lambda: "this torch build has no oneDNN")
    layer = nn.Linear(3, 2)
    use_cpu_linear(layer, "auto")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["zoo: parallel.cpu_linear=auto: this torch build has no oneDNN; linear layers use torch's BLAS"]
    x = torch.randn(2, 3)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


@needs_onednn
def test_compiles_fullgraph():
    set_cpu_linear("onednn")
    layer = Linear(6, 5)
    x = torch.randn(2, 3, 6, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    y.square().sum().backward()
    gx, gw = x.grad.clone(), layer.weight.grad.clone()
    x.grad = layer.weight.grad = None
    ref = F.linear(x, layer.weight, layer.bias)
    ref.square().sum().backward()
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, layer.weight.grad, rtol=1e-5, atol=1e-5)


def test_config_rejects_unknown_backend():
    from zoo_core.config import load_config, resolve
    from zoo_core.errors import UserError
    from zoo_core.registry import get_registry
    with pytest.raises(UserError, match="cpu_linear"):
        resolve(load_config(None, ["parallel.cpu_linear=mkl"]), get_registry())
