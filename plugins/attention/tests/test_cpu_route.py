"""The matmul attention kernel and the CPU chooser between it and SDPA (cpu_route.py)."""

import json
import math

import pytest
import torch

from zoo_attention import Attention, AttentionConfig, cpu_route
from zoo_attention.mixer import attention_path
from zoo_attention.reference import allowed, naive_attention
from zoo_core import cpu_tune
from zoo_core.testing.build import rel_err as rel


def pair(**kw):
    """The mixer on backend=matmul and on backend=naive, with the same float64 weights."""
    torch.manual_seed(0)
    fast, naive = (Attention(32, AttentionConfig(head_dim=8, backend=b, **kw)).double() for b in ("matmul", "naive"))
    fast.reset_parameters()
    naive.load_state_dict(fast.state_dict())
    return fast, naive


def causal(B, T):
    pos = torch.arange(T).expand(B, T)
    return allowed(pos, pos, None)


def count_matmul(monkeypatch) -> list:
    """A list that grows by one per call of the matmul kernel."""
    calls, real = [], cpu_route.matmul_attention
    monkeypatch.setattr(cpu_route, "matmul_attention", lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("H, Hkv", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("T", [13, 128, 300])  # one block, exactly one, three (the last short)
def test_matmul_kernel_equals_naive_with_gradients(H, Hkv, T):
    torch.manual_seed(0)
    q = torch.randn(2, H, T, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, Hkv, T, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    g = torch.randn(2, H, T, 8, dtype=torch.float64)
    o = cpu_route.matmul_attention(q, k, v)
    ref = naive_attention(q, k, v, causal(2, T))
    assert rel(o, ref) < 1e-12
    for a, b in zip(torch.autograd.grad(o, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        assert rel(a, b) < 1e-12


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 2}, {"n_kv_heads": 1, "rope_fraction": 0.5}, {"window": 300}])
@pytest.mark.parametrize("T", [13, 300])
def test_matmul_mixer_equals_naive_with_gradients(kw, T, monkeypatch):
    calls = count_matmul(monkeypatch)
    fast, naive = pair(**kw)
    x = torch.randn(2, T, 32, dtype=torch.float64, requires_grad=True)
    y_fast, _ = fast(x)
    assert calls  # the matmul path ran (a window >= T is plain causal)
    g = torch.randn_like(y_fast)
    y_naive, _ = naive(x)
    assert rel(y_fast, y_naive) < 1e-10
    grads = [torch.autograd.grad(y, [x, *m.parameters()], g) for y, m in ((y_fast, fast), (y_naive, naive))]
    assert all(rel(a, b) < 1e-10 for a, b in zip(*grads))


def test_matmul_backend_elsewhere_is_sdpa_with_a_mask():
    """backend=matmul covers plain causal attention; a KV cache or a shorter window take SDPA."""
    q = torch.zeros(1, 8, 2, 4)
    assert attention_path("matmul", q, plain_causal=True, full=True) == "matmul"
    assert attention_path("matmul", q, plain_causal=True, full=False) == "sdpa"  # window < T
    assert attention_path("matmul", q, plain_causal=False) == "sdpa"  # a KV cache
    m, ref = pair(window=5)
    x = torch.randn(2, 13, 32, dtype=torch.float64)
    y, state = m(x[:, :7], return_state=True)
    y2, _ = m(x[:, 7:], state)
    assert rel(torch.cat([y, y2], 1), ref(x)[0]) < 1e-10


def test_bf16_matmul_is_close_to_fp32():
    """Scores and P v in bf16, softmax in fp32: within 2% (relative norm) of fp32 on the same
    bf16-rounded inputs, outputs and gradients; SDPA in bf16 is as far."""
    torch.manual_seed(0)
    B, H, Hkv, T, hd = 2, 4, 2, 200, 32
    q = torch.randn(B, H, T, hd).bfloat16()
    k, v = (torch.randn(B, Hkv, T, hd).bfloat16() for _ in range(2))
    g = torch.randn(B, H, T, hd).bfloat16()

    def run(fn, dtype):
        args = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        o = fn(*args)
        return [o.float(), *(d.float() for d in torch.autograd.grad(o, args, g.to(dtype)))]

    ref = run(cpu_route.matmul_attention, torch.float32)
    bf16 = run(cpu_route.matmul_attention, torch.bfloat16)
    sdpa = run(cpu_route.sdpa_attention, torch.bfloat16)
    for a, b, s in zip(bf16, ref, sdpa):
        assert a.dtype == torch.float32 and rel(a, b) < 0.02
        assert rel(a, b) < 2 * rel(s, b) + 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_softmax_is_computed_in_fp32(dtype):
    """The kernel hands half-precision scores to torch.softmax as they are: it must compute in
    float32 and round each probability once (within one unit in the last place of the result)."""
    torch.manual_seed(0)
    s = (4 * torch.randn(4, 128, 200)).to(dtype).triu(1)
    exact = torch.softmax(s, -1, dtype=torch.float32)
    info = torch.finfo(dtype)  # eps: the spacing relative to 1; below smallest_normal, fixed
    ulp = info.eps * torch.maximum(exact, torch.tensor(info.smallest_normal))
    assert ((torch.softmax(s, -1).float() - exact).abs() <= ulp).all()


def test_matmul_under_autocast_computes_in_bf16():
    m = Attention(64, AttentionConfig(head_dim=16, backend="matmul"))
    m.reset_parameters()
    x = torch.randn(2, 40, 64)
    ref, _ = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = m(x)
        q = torch.randn(1, 2, 8, 4)  # float32 q under autocast: the matmuls still run in bf16
        assert cpu_route.compute_dtype(q) == torch.bfloat16
        assert cpu_route.matmul_attention(q, q, q).dtype == torch.bfloat16
    assert y.dtype == torch.bfloat16 and rel(y.float(), ref) < 0.03


# -- the chooser -------------------------------------------------------------------------

SHAPE = (2, 4, 2, 256, 64)  # B, H, Hkv, T, hd: above TINY_MACS, scores far under the budget


@pytest.fixture
def timings(monkeypatch):
    """A fake `_time` that records its calls; matmul measures twice as fast as SDPA."""
    calls = []

    def fake(*args):
        calls.append(args)
        return {"sdpa": 0.002, "matmul": 0.001}

    monkeypatch.setattr(cpu_route, "_time", fake)
    return calls


def test_choice_is_measured_once_then_cached(timings, capsys):
    assert cpu_route.choose(*SHAPE, torch.bfloat16, True) == "matmul"
    assert timings == [(*SHAPE, torch.bfloat16, True)]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zoo-attention: CPU attention kernel per shape" in err
    assert "2x4x2x256x64 bfloat16 train matmul (2.00x for matmul, measured)" in err
    assert str(cpu_tune.cache_path()) in err
    assert cpu_route.choose(*SHAPE, torch.bfloat16, True) == "matmul"  # this process: not said again
    assert len(timings) == 1 and capsys.readouterr().err == ""
    entry = json.loads(cpu_tune.cache_path().read_text())["entries"]
    assert [e["2x4x2x256x64 bfloat16 train"]["kernel"] for e in entry.values()] == ["matmul"]
    cpu_tune.forget()  # a new process reads the file
    cpu_route.forget()
    assert cpu_route.choose(*SHAPE, torch.bfloat16, True) == "matmul"
    assert len(timings) == 1 and "(2.00x for matmul, cached)" in capsys.readouterr().err
    # another dtype, or inference, is another shape: measured for itself
    assert cpu_route.choose(*SHAPE, torch.float32, True) == "matmul"
    assert cpu_route.choose(*SHAPE, torch.bfloat16, False) == "matmul"
    assert len(timings) == 3


def test_sdpa_unless_matmul_is_clearly_faster(monkeypatch):
    monkeypatch.setattr(cpu_route, "_time", lambda *a: {"sdpa": 0.00102, "matmul": 0.001})
    assert cpu_route.choose(*SHAPE, torch.float32, True) == "sdpa"  # 2% is within MARGIN


def test_untimed_shapes_take_sdpa(timings, capsys):
    B, H, T, hd = 16, 8, 512, 64  # bf16 scores: 64 MiB exactly, within the budget
    assert B * H * T * T * 2 == cpu_route.SCORES_BUDGET
    assert cpu_route.untimed(B, H, T, hd, torch.bfloat16) is None
    assert cpu_route.choose(B, H, H, T, hd, torch.float32, True) == "sdpa"  # fp32: 128 MiB
    assert "16x8x8x512x64 float32 train sdpa (untimed: scores over 64 MiB)" in capsys.readouterr().err
    assert cpu_route.choose(2, 4, 4, 16, 8, torch.float32, True) == "sdpa"  # tiny
    assert cpu_route.choose(*SHAPE, torch.float64, True) == "sdpa"  # the tests' dtype
    assert timings == [] and capsys.readouterr().err == ""  # those two quietly


def test_no_measuring_under_compile(timings, monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert cpu_route.choose(*SHAPE, torch.bfloat16, True) == "sdpa"
    assert timings == [] and not cpu_tune.cache_path().exists()


def test_auto_on_cpu_takes_the_chosen_kernel(timings, monkeypatch):
    """backend=auto asks the chooser with the shape and the dtype the kernels see (bf16 under
    autocast), training or not; KV cache and short-window forwards do not ask."""
    asked = []
    real = cpu_route.choose
    monkeypatch.setattr(cpu_route, "choose", lambda *a: asked.append(a) or real(*a))
    monkeypatch.setattr(cpu_route, "TINY_MACS", 0)
    ran = count_matmul(monkeypatch)
    m = Attention(64, AttentionConfig(head_dim=16, n_kv_heads=2))
    m.reset_parameters()
    x = torch.randn(3, 20, 64)
    m(x)[0].sum().backward()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        m(x)
    assert asked == [(3, 4, 2, 20, 16, torch.float32, True), (3, 4, 2, 20, 16, torch.bfloat16, False)]
    assert len(ran) == 2 and len(timings) == 2
    with torch.no_grad():
        _, state = m(x, return_state=True)
        m(x, state)
        Attention(64, AttentionConfig(head_dim=16, window=8))(x)
    assert len(asked) == 3  # only the first forward (nothing cached, no window) asks
    assert asked[2] == (3, 4, 2, 20, 16, torch.float32, False) and len(timings) == 3  # fp32 inference: its own


def test_real_timing_at_a_small_shape():
    with torch.no_grad():  # the timing of a training forward turns gradients on for itself
        t = cpu_route._time(1, 2, 1, 128, 32, torch.float32, True)
    assert set(t) == {"sdpa", "matmul"} and all(0 < s < 1 for s in t.values())
    with torch.inference_mode():  # generation's prefill
        entry = cpu_route.measure(1, 2, 1, 128, 32, torch.bfloat16, False)
    assert entry["kernel"] in ("sdpa", "matmul")
    assert math.isclose(entry["matmul_vs_sdpa"], entry["sdpa_ms"] / entry["matmul_ms"], rel_tol=0.01)


@pytest.mark.parametrize("kw", [{"backend": "matmul"}, {"backend": "matmul", "n_kv_heads": 2}])
def test_conformance_with_matmul(kw):
    from zoo_core.testing import check_mixer

    check_mixer(Attention, AttentionConfig(head_dim=8, **kw), name="attention").raise_for_failures()


def test_conformance_with_auto_choosing_matmul(timings, monkeypatch):
    """backend=auto where every shape is timed and matmul wins: eager runs matmul, compile SDPA."""
    from zoo_core.testing import check_mixer

    monkeypatch.setattr(cpu_route, "TINY_MACS", 0)
    monkeypatch.setattr(cpu_route, "TIMED", (torch.float32, torch.bfloat16, torch.float64))
    check_mixer(Attention, AttentionConfig(head_dim=8), name="attention").raise_for_failures()
    assert timings  # matmul was chosen at least once


def test_choices_lists_the_decisions_for_benchmark_records(monkeypatch):
    from zoo_attention import cpu_route

    cpu_route.forget()
    monkeypatch.setattr(cpu_route, "_time", lambda *a: {"sdpa": 2.0, "matmul": 1.0})
    kernel = cpu_route.choose(8, 4, 4, 256, 64, torch.bfloat16, True)
    assert kernel == "matmul"
    assert cpu_route.choices() == {"8x4x4x256x64 bfloat16 train": "matmul"}
    cpu_route.forget()
    assert cpu_route.choices() == {}
