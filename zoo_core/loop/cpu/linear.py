"""fp32 linear layers on CPU: oneDNN or the BLAS behind `torch.mm`, whichever is faster here.

PyTorch's CPU wheels send float32 `F.linear` and its backward to MKL's sgemm.
On AMD CPUs MKL runs its AVX2 code and reaches about half of what oneDNN (also
inside the wheel) gets at the same shapes (benchmarks/results/peers-linear-*.md);
on an Intel Xeon with AVX-512 MKL is as fast or faster (0.62-1.01x for oneDNN,
benchmarks/results/peers-train-cpu2-intel-xeon-amx.md). So
`parallel.cpu_linear=auto` times both routes at each linear shape the model
runs (forward, input gradient and weight gradient together, the best of
interleaved rounds) and takes oneDNN only where it measured at least 5% faster; the
choice is cached on disk per CPU model, flags, torch version, threads and
shape (zoo_core/loop/cpu/tune.py), so later runs do not measure again. Shapes
under TINY_MACS multiply-adds take aten untimed. The weight gradient has two
oneDNN forms, (x^T g)^T and g^T x; which is faster depends on the CPU too, so
the timing runs both and keeps the faster with the route (eager; under compile,
and for `onednn` forced, the form follows `_dw_rule`). `onednn` and `aten` force
one route. Both routes are float32 with float32 accumulation (the results
differ in rounding only).

Applied from outside the model code: `apply_cpu_linear` turns every
`nn.Linear` into `Linear` (same parameters, same state dict) and switches
`linear`, which the core's own heads call, for the whole process, as
`torch.backends` flags do. Anything not float32 on CPU (bf16 autocast, CUDA,
float64 tests) takes `F.linear` as before.
"""

from __future__ import annotations

import atexit
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.loop.cpu import tune as cpu_tune

MODES = ("auto", "onednn", "aten")
#: Below this many multiply-adds (M * K * N) a linear takes aten without timing:
#: a call takes well under a millisecond, so the route hardly matters and a timing would be noise.
TINY_MACS = 1 << 22
#: oneDNN is chosen only where it measured this much faster than aten.
MARGIN = 1.05
_mode = "aten"
_say = True
_routes: dict[tuple[int, int, int, bool], bool] = {}  # this process's decisions: True = oneDNN
#: The measured weight-gradient form per shape (DW_FORMS).
_dw_form: dict[tuple[int, int, int, bool], str] = {}
_pending: list[str] = []  # decisions not yet logged
_pending_ptr = 0  # the weight whose shape opened them: seen again, the step's shapes are all decided


def onednn_available() -> str | None:
    """None if oneDNN's linear runs here, else why not (one line)."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN"
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return "this torch has no torch.ops.mkldnn._linear_pointwise"
    try:
        x = torch.ones(2, 3)
        torch.ops.mkldnn._linear_pointwise(x, torch.ones(4, 3), None, "none", [], "")
    except Exception as e:  # noqa: BLE001 - any failure means: use aten
        return f"oneDNN linear failed ({type(e).__name__})"
    return None


def set_cpu_linear(mode: str, say: bool = True) -> str | None:
    """Choose the backend of `linear` on CPU float32; returns why oneDNN is off, or None."""
    global _mode, _say
    why_not = None if mode == "aten" else onednn_available()
    _mode = "aten" if mode == "aten" or why_not is not None else mode
    _say = say
    return why_not


def mode() -> str:
    """The route `linear` takes now: auto, onednn or aten."""
    return _mode


def _onednn_mm(a: Tensor, b_t: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, "none", [], "")


def _aten_mm(a: Tensor, b_t: Tensor, bias: Tensor | None) -> Tensor:
    return torch.addmm(bias, a, b_t.t()) if bias is not None else torch.mm(a, b_t.t())


# -- choosing by measurement ---------------------------------------------------


#: dW = g^T x under the oneDNN route: "xt" oneDNN's (x^T g)^T, "gt" oneDNN's g^T x (each copies
#: its transposed first operand: oneDNN wants it contiguous), "mm" aten's mm, which reads the
#: transposes in place (MKL's sgemm takes them as flags).
DW_FORMS = ("xt", "gt", "mm")


def _dw_rule(out_f: int, in_f: int) -> str:
    """The weight-gradient form where none was measured: (x^T g)^T when the weight is at least as
    wide as it is tall (faster on the AMD EPYC where oneDNN was first timed)."""
    return "xt" if out_f >= in_f else "gt"


def _onednn_dw(x2: Tensor, g2: Tensor, form: str, key: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Tensor:
    """dW = g^T x (out_f x in_f) in one of DW_FORMS."""
    if form == "mm":
        return torch.mm(g2.t(), x2)
    return _mm(x2.t(), g2.t(), None, key).t() if form == "xt" else _mm(g2.t(), x2.t(), None, key)


def _time_routes(m: int, k: int, n: int, bias: bool) -> dict[str, float]:
    """Best seconds per forward + backward of each route at (m, k) @ (k, n), the three matmuls as the
    autograd functions run them (no autograd here: this also runs inside a compiled graph's op);
    oneDNN once per weight-gradient form of DW_FORMS ("onednn_xt", "onednn_gt", "onednn_mm")."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen)
    gy, b = torch.randn(m, n, generator=gen), (torch.randn(n, generator=gen) if bias else None)

    def onednn(form: str):
        def run():
            _onednn_mm(x, w, b)
            _onednn_mm(gy, w.t(), None)
            if form == "mm":
                torch.mm(gy.t(), x)
            else:
                _onednn_mm(x.t(), gy.t(), None).t() if form == "xt" else _onednn_mm(gy.t(), x.t(), None)

        return run

    def aten():
        F.linear(x, w, b)
        torch.mm(gy, w)
        torch.mm(gy.t(), x)

    with torch.no_grad():  # the best round of each: a busy machine only ever adds time
        return cpu_tune.paired_medians(
            {"aten": aten, **{f"onednn_{form}": onednn(form) for form in DW_FORMS}}, reducer=min
        )


def _measure(m: int, k: int, n: int, bias: bool) -> dict:
    t = _time_routes(m, k, n, bias)
    if "onednn" in t:  # one oneDNN timing (a caller's own): its weight gradient took the rule's form
        form = _dw_rule(n, k)
    else:
        form = min((f for f in DW_FORMS if f"onednn_{f}" in t), key=lambda f: t[f"onednn_{f}"])
        t["onednn"] = t[f"onednn_{form}"]
    speedup = t["aten"] / t["onednn"]
    return {
        "route": "onednn" if speedup >= MARGIN else "aten",
        "onednn_vs_aten": round(speedup, 3),
        "aten_ms": round(1e3 * t["aten"], 4),
        "onednn_ms": round(1e3 * t["onednn"], 4),
        "dw": form,
    }


def choose(m: int, k: int, n: int, bias: bool, weight_ptr: int = 0) -> bool:
    """True if oneDNN serves this shape under `auto` (measured once per machine and shape, then cached).

    `weight_ptr` (the weight's data pointer) only times the log line: the decisions since the
    last line are printed when the weight that opened them comes round again (its backward under
    compile, the next step eager), so one line holds every shape of a step."""
    global _pending_ptr
    key = (m, k, n, bias)
    route = _routes.get(key)
    if _pending and weight_ptr and weight_ptr == _pending_ptr:
        _flush()
    if route is None:
        if m * k * n < TINY_MACS:
            route = False
        else:
            skey = f"{m}x{k}->{n}" + ("+bias" if bias else "")
            entry = cpu_tune.lookup("linear", skey)
            how = "cached"
            if entry is None:
                entry, how = _measure(m, k, n, bias), "measured"
                cpu_tune.store("linear", skey, entry)
            route = entry["route"] == "onednn"
            if entry.get("dw") in DW_FORMS:  # entries cached before the form was measured keep the rule's
                _dw_form[key] = entry["dw"]
            if not _pending:
                _pending_ptr = weight_ptr
            _pending.append(f"{skey} {entry['route']} ({entry['onednn_vs_aten']:.2f}x, {how})")
        _routes[key] = route
    return route


@atexit.register
def _flush() -> None:
    # One line for the shapes decided since the last one (at exit, if no step came round).
    if _say and _pending:
        print(
            f"zoo: parallel.cpu_linear=auto: oneDNN/aten per linear shape, M x K -> N: {'; '.join(_pending)} "
            f"[{cpu_tune.cache_path()}]",
            file=sys.stderr,
        )
    _pending.clear()


def choices() -> dict[str, str]:
    """This process's decisions so far, `{"MxK->N[+bias]": "onednn" | "aten"}` (for benchmark records)."""
    return {f"{m}x{k}->{n}" + ("+bias" if b else ""): "onednn" if r else "aten" for (m, k, n, b), r in _routes.items()}


# -- the routes ------------------------------------------------------------------


@torch.library.custom_op("zoo_core::onednn_linear", mutates_args=())
def _linear_op(a: Tensor, b_t: Tensor, bias: Tensor | None, m: int, k: int, n: int, b: int) -> Tensor:
    # An opaque op for torch.compile (inductor's own lowering of _linear_pointwise
    # expects the weight prepacked by its freezing pass). m, k, n, b (bias) name
    # the linear this matmul belongs to: m = 0 forces oneDNN, else `choose`
    # decides at run time, when the shapes are concrete.
    if m == 0 or choose(m, k, n, bool(b), b_t.data_ptr()):
        return _onednn_mm(a, b_t, bias)
    return _aten_mm(a, b_t, bias)


@_linear_op.register_fake
def _(a, b_t, bias, m, k, n, b):
    return a.new_empty(a.shape[0], b_t.shape[0])


def _mm(a: Tensor, b_t: Tensor, bias: Tensor | None = None, key: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Tensor:
    """a @ b_t.T (+ bias), through oneDNN (or, under compile with `key`, as `choose` says)."""
    if torch.compiler.is_compiling():
        return _linear_op(a, b_t, bias, *key)
    return _onednn_mm(a, b_t, bias)  # no dispatch overhead


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, key: tuple[int, int, int, int]) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, weight)
        ctx.has_bias = bias is not None
        ctx.key = key
        return _mm(x2, weight, bias, key).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, gy: Tensor):
        x2, weight = ctx.saved_tensors
        g2 = gy.reshape(-1, gy.shape[-1])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _mm(g2, weight.t(), None, ctx.key).view(*gy.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            # dW = g^T x reduces over tokens; which of its two oneDNN forms is faster was measured
            # with the route (eager, auto), else the rule's.
            out_f, in_f = weight.shape
            shape = (x2.shape[0], in_f, out_f, ctx.has_bias)
            form = _dw_rule(out_f, in_f)
            if not torch.compiler.is_compiling():
                form = _dw_form.get(shape, form)
            gw = _onednn_dw(x2, g2, form, ctx.key)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb, None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear`; for float32 on CPU through oneDNN where `set_cpu_linear` chose it
    (`auto`: per shape, by measurement)."""
    if (
        _mode != "aten"
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.shape[-1] > 0
        and not torch.is_autocast_enabled("cpu")
    ):
        if _mode == "onednn":
            return _OneDNNLinear.apply(x, weight, bias, (0, 0, 0, 0))
        k, n = weight.shape[1], weight.shape[0]
        m = x.numel() // k
        if torch.compiler.is_compiling():  # decided inside the op, where m is concrete
            return _OneDNNLinear.apply(x, weight, bias, (m, k, n, int(bias is not None)))
        if choose(m, k, n, bias is not None, weight.data_ptr()):
            return _OneDNNLinear.apply(x, weight, bias, (0, 0, 0, 0))
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` whose forward is `linear`; `apply_cpu_linear` swaps it in."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


def apply_cpu_linear(model: nn.Module, mode: str, say: bool = True) -> str | None:
    """Route the model's linear layers as `mode` says; returns why oneDNN is off, or None."""
    why_not = set_cpu_linear(mode, say)
    if mode != "aten":
        for module in model.modules():
            if type(module) is nn.Linear:  # exactly: subclasses may have their own forward
                module.__class__ = Linear
    return why_not
