"""parallel.cpu_linear: oneDNN linears agree with F.linear, gradients included, and fall back cleanly;
`auto` picks the route by a cached measurement."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo_core import cpu_linear, cpu_tune
from zoo_core.cpu_linear import Linear, apply_cpu_linear, linear, set_cpu_linear

needs_onednn = pytest.mark.skipif(
    cpu_linear.onednn_available() is not None, reason=f"oneDNN linear unavailable: {cpu_linear.onednn_available()}"
)


@pytest.fixture(autouse=True)
def _restore_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CPU_TUNE", str(tmp_path / "cpu-tune.json"))
    cpu_tune.forget()
    before = cpu_linear._mode, dict(cpu_linear._routes)
    cpu_linear._routes.clear()
    cpu_linear._dw_form.clear()
    yield
    cpu_linear._mode = before[0]
    cpu_linear._routes.clear()
    cpu_linear._routes.update(before[1])
    cpu_linear._dw_form.clear()
    cpu_linear._pending.clear()
    cpu_tune.forget()


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
    ref = _grads(
        F.linear, *(t.double().detach().requires_grad_() if t is not None else None for t in (x, w, b)), g.double()
    )
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
@pytest.mark.parametrize("mode", ["onednn", "auto"])
def test_compiles_fullgraph(mode, monkeypatch):
    set_cpu_linear(mode)
    monkeypatch.setattr(cpu_linear, "TINY_MACS", 0)  # auto: decided inside the compiled graph's op
    monkeypatch.setattr(cpu_linear, "_time_routes", lambda *shape: {"aten": 2.0, "onednn": 1.0})
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
    if mode == "auto":
        assert cpu_linear.choices() == {"6x6->5+bias": "onednn"}


def test_config_rejects_unknown_backend():
    from zoo_core.config import load_config, resolve
    from zoo_core.errors import UserError
    from zoo_core.registry import get_registry

    with pytest.raises(UserError, match="cpu_linear"):
        resolve(load_config(None, ["parallel.cpu_linear=mkl"]), get_registry())


# -- auto: chosen by measurement, cached -------------------------------------------


def _fake_timing(aten_s, onednn_s, calls):
    def time_routes(m, k, n, bias):
        calls.append((m, k, n, bias))
        return {"aten": aten_s, "onednn": onednn_s}

    return time_routes


def test_cache_is_written_read_and_keyed_by_machine(tmp_path, monkeypatch):
    path = tmp_path / "cpu-tune.json"
    cpu_tune.store("linear", "8x8->8", {"route": "onednn"})
    data = json.loads(path.read_text())
    ((key, entries),) = data["entries"].items()
    info = cpu_tune.cpu_info()
    assert info["model"] in key and torch.__version__ in key and f"{torch.get_num_threads()} threads" in key
    assert all(f in key for f in info["flags"])
    assert entries == {"8x8->8": {"route": "onednn"}}
    cpu_tune.forget()  # a new process reads the file
    assert cpu_tune.lookup("linear", "8x8->8") == {"route": "onednn"}
    assert cpu_tune.lookup("linear", "8x8->9") is None
    for change in (
        {"model": "Another CPU", "flags": info["flags"]},
        {"model": info["model"], "flags": [*info["flags"], "amx_bf16"]},
    ):
        cpu_tune.forget()
        monkeypatch.setattr(cpu_tune, "cpu_info", lambda change=change: change)
        assert cpu_tune.lookup("linear", "8x8->8") is None  # another CPU measures for itself
    monkeypatch.undo()
    monkeypatch.setenv("ZOO_CPU_TUNE", str(path))
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    cpu_tune.forget()
    assert cpu_tune.lookup("linear", "8x8->8") is None  # and so does another torch


@needs_onednn
@pytest.mark.parametrize(
    "aten_s,onednn_s,route", [(2.0, 1.0, "onednn"), (1.0, 2.0, "aten"), (1.0, 0.97, "aten")]
)  # within the margin: aten
def test_auto_takes_the_faster_route_and_caches_it(aten_s, onednn_s, route, monkeypatch):
    monkeypatch.setattr(cpu_linear, "TINY_MACS", 0)  # small shapes, timed as big ones would be
    calls = []
    monkeypatch.setattr(cpu_linear, "_time_routes", _fake_timing(aten_s, onednn_s, calls))
    set_cpu_linear("auto")
    assert cpu_linear.choose(256, 64, 128, True) is (route == "onednn")
    assert calls == [(256, 64, 128, True)]
    cpu_linear.choose(256, 64, 128, True)
    assert len(calls) == 1  # decided once per process
    cpu_linear._routes.clear()
    cpu_tune.forget()
    monkeypatch.setattr(cpu_linear, "_time_routes", lambda *a: pytest.fail("measured again despite the cache"))
    assert cpu_linear.choose(256, 64, 128, True) is (route == "onednn")
    assert cpu_tune.lookup("linear", "256x64->128+bias")["route"] == route


def test_tiny_shapes_take_aten_untimed(monkeypatch):
    monkeypatch.setattr(cpu_linear, "_time_routes", lambda *a: pytest.fail("timed a tiny shape"))
    set_cpu_linear("auto")
    assert cpu_linear.choose(4, 8, 8, False) is False


@needs_onednn
@pytest.mark.parametrize("route", ["onednn", "aten"])
def test_picked_route_matches_float64_reference(route, monkeypatch):
    """Whichever route auto picks, outputs and gradients are F.linear's in float64 up to fp32 rounding."""
    monkeypatch.setattr(cpu_linear, "TINY_MACS", 0)  # small shapes, timed as big ones would be
    fast = {"onednn": (2.0, 1.0), "aten": (1.0, 2.0)}[route]
    monkeypatch.setattr(cpu_linear, "_time_routes", _fake_timing(*fast, []))
    used = []
    real = cpu_linear._onednn_mm
    monkeypatch.setattr(cpu_linear, "_onednn_mm", lambda *a: used.append(1) or real(*a))
    set_cpu_linear("auto")
    torch.manual_seed(0)
    x = torch.randn(4, 64, 96, requires_grad=True)  # 256 x 96 -> 64
    w = torch.randn(64, 96, requires_grad=True)
    b = torch.randn(64, requires_grad=True)
    g = torch.randn(4, 64, 64)
    ours = _grads(linear, x, w, b, g)
    assert bool(used) is (route == "onednn")
    ref = _grads(F.linear, *(t.double().detach().requires_grad_() for t in (x, w, b)), g.double())
    aten = _grads(F.linear, x, w, b, g)
    for a, r, t in zip(ours, ref, aten):
        assert a.dtype == torch.float32
        err, aten_err = (a.double() - r).abs().max().item(), (t.double() - r).abs().max().item()
        assert err <= 4 * aten_err + 1e-6, (err, aten_err)  # as close to float64 as aten's own fp32
        torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=1e-4)


@needs_onednn
def test_auto_logs_its_choices_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(cpu_linear, "TINY_MACS", 0)  # small shapes, timed as big ones would be
    monkeypatch.setattr(cpu_linear, "_time_routes", _fake_timing(2.0, 1.0, []))
    # two layers of one shape (as attention's wq and wo): the line waits for the next step
    layer = nn.Sequential(nn.Linear(96, 64), nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 80, bias=False))
    apply_cpu_linear(layer, "auto")
    x = torch.randn(256, 96)
    layer(x)
    assert capsys.readouterr().err == ""
    layer(x)  # the first layer's weight comes round again: every shape of the step is decided
    layer(x)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("zoo: parallel.cpu_linear=auto: ")
    assert "256x96->64+bias onednn (2.00x, measured)" in err[0] and "256x64->80 onednn" in err[0]
    assert err[0].count("256x64->64+bias") == 1


@needs_onednn
def test_measured_timing_runs_both_routes():
    t = cpu_linear._time_routes(128, 64, 96, True)
    assert set(t) == {"aten", "onednn_xt", "onednn_gt", "onednn_mm"} and all(v > 0 for v in t.values())


@needs_onednn
@pytest.mark.parametrize("xt_s,gt_s,mm_s,form", [(1.0, 2.0, 2.5, "xt"), (2.0, 1.0, 2.5, "gt"), (2.0, 1.5, 1.0, "mm")])
def test_weight_gradient_takes_the_measured_form(xt_s, gt_s, mm_s, form, monkeypatch):
    """The weight gradient's three forms are timed with the route; the fastest runs, whatever the rule
    says (xt for this wide weight), and the values stay F.linear's."""
    monkeypatch.setattr(cpu_linear, "TINY_MACS", 0)
    times = {"aten": 3.0, "onednn_xt": xt_s, "onednn_gt": gt_s, "onednn_mm": mm_s}
    monkeypatch.setattr(cpu_linear, "_time_routes", lambda *a: times)
    firsts = []
    real = cpu_linear._onednn_mm
    monkeypatch.setattr(cpu_linear, "_onednn_mm", lambda a, *r: firsts.append(tuple(a.shape)) or real(a, *r))
    set_cpu_linear("auto")
    torch.manual_seed(0)
    x = torch.randn(256, 48, requires_grad=True)
    w = torch.randn(80, 48, requires_grad=True)  # out 80 >= in 48: the rule's form is xt
    g = torch.randn(256, 80)
    ours = _grads(linear, x, w, None, g)
    # forward (256, 48), input grad (256, 80), then dW's first operand: x^T (48, 256) or g^T (80, 256),
    # or no oneDNN call (aten's mm)
    dw_call = {"xt": [(48, 256)], "gt": [(80, 256)], "mm": []}[form]
    assert firsts == [(256, 48), (256, 80), *dw_call]
    assert cpu_tune.lookup("linear", "256x48->80")["dw"] == form
    for a, r in zip(ours, _grads(F.linear, x, w, None, g)):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
