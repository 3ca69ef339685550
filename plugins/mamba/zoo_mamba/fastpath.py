"""The CUDA kernels of mamba-ssm and causal-conv1d (`pip install 'zoo-mamba[cuda]'`),
wrapped as torch.library custom ops so torch.compile traces them as single nodes.

They are imported lazily, inside the "cuda" impls; `paths.usable` decides whether they
run and, when one is missing, says so once, in one line, and picks the fallback.

Every op takes `impl`: "cuda" calls the library, "torch" calls our PyTorch path.
The "torch" impl exists so the wrapper itself (fake kernels, autograd, compile)
is tested on any machine; the CUDA tests then compare "cuda" against it.

Backward: a library's autograd function cannot be called from inside a custom
op (its kernel runs below the autograd dispatch keys), and its internal
backward entry points change between releases. So the backward op re-enables
autograd locally, reruns the public function and differentiates it. That costs
one extra forward in the backward, like mamba-ssm's own conv recomputation,
and works across releases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from zoo_kernels import selective_scan as zoo_selective_scan
from zoo_kernels.ssd import ssd_chunked
from zoo_mamba.common import acc_dtype, causal_conv, causal_conv_step, ssm_step_torch

# -- mamba-ssm's SSD, imported on first use ---------------------------------------------------


def _chunk_scan_combined():
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return mamba_chunk_scan_combined


# -- recompute-style backward -----------------------------------------------------------


@contextlib.contextmanager
def _autograd_enabled():
    """Re-include the autograd dispatch keys that custom-op kernels run without."""
    DK = torch._C.DispatchKey
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (DK.AutogradCPU, DK.AutogradOther, DK.ADInplaceOrView):
        exclude = exclude.remove(key)
    with torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude), torch.enable_grad():
        yield


def _vjp(fn: Callable, inputs: Sequence[Tensor | None], grads: Sequence[Tensor | None]) -> list[Tensor]:
    """Gradients of fn(*inputs) against `grads`; zeros for None inputs or no dependence."""
    with _autograd_enabled():
        leaves = [None if t is None else t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
        outs = fn(*leaves)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        wrt = [t for t in leaves if t is not None and t.requires_grad]
        got = (
            torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
            if pairs
            else [None] * len(wrt)
        )
    it = iter(got)
    result = []
    for t, leaf in zip(inputs, leaves):
        if t is None or not leaf.requires_grad:
            result.append(inputs[0].new_zeros(0) if t is None else torch.zeros_like(t))
        else:
            g = next(it)
            result.append(torch.zeros_like(t) if g is None else g.to(t.dtype))
    return result


def _grads_out(grads: list[Tensor], inputs: Sequence[Tensor | None]) -> tuple[Tensor | None, ...]:
    return tuple(None if t is None else g for g, t in zip(grads, inputs))


# -- Mamba-2: chunked SSD scan ------------------------------------------------------------


def _ssd(impl: str, x, dt, A, B, C, chunk_size, h0):
    if impl == "cuda":
        y, h = _chunk_scan_combined()(x, dt, A, B, C, chunk_size, initial_states=h0, return_final_states=True)
        return y, h.to(acc_dtype(x))
    return ssd_chunked(x, dt, A, B, C, chunk_size, h0)


@torch.library.custom_op("zoo_mamba::ssd_scan", mutates_args=())
def ssd_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, h0: Tensor | None, impl: str
) -> tuple[Tensor, Tensor]:
    """(y (b, T, H, P), h_T (b, H, P, N)) as `reference.ssd_ref`."""
    y, h = _ssd(impl, x, dt, A, B, C, chunk_size, h0)
    return y.contiguous(), h.contiguous()


@ssd_scan.register_fake
def _(x, dt, A, B, C, chunk_size, h0, impl):
    b, _, H, P = x.shape
    return x.new_empty(x.shape), x.new_empty((b, H, P, B.shape[3]), dtype=acc_dtype(x))


@torch.library.custom_op("zoo_mamba::ssd_scan_backward", mutates_args=())
def ssd_scan_backward(inputs: list[Tensor | None], chunk_size: int, gy: Tensor, gh: Tensor, impl: str) -> list[Tensor]:
    """The gradients of `ssd_scan` for its tensors `inputs` = [x, dt, A, B, C, h0] (h0 may be None:
    an empty gradient)."""
    return _vjp(lambda *a: _ssd(impl, *a[:5], chunk_size, a[5]), inputs, (gy, gh))


@ssd_scan_backward.register_fake
def _(inputs, chunk_size, gy, gh, impl):
    return [inputs[0].new_empty(0) if t is None else torch.empty_like(t) for t in inputs]


def _ssd_setup(ctx, inputs, output):
    x, dt, A, B, C, chunk_size, h0, impl = inputs
    ctx.save_for_backward(x, dt, A, B, C, h0)
    ctx.chunk_size, ctx.impl, ctx.has_h0 = chunk_size, impl, h0 is not None


def _ssd_backward(ctx, gy, gh):
    x, dt, A, B, C, h0 = ctx.saved_tensors
    h0 = h0 if ctx.has_h0 else None
    gy = torch.zeros_like(x) if gy is None else gy
    gh = x.new_zeros((x.shape[0], x.shape[2], x.shape[3], B.shape[3]), dtype=acc_dtype(x)) if gh is None else gh
    g = ssd_scan_backward([x, dt, A, B, C, h0], ctx.chunk_size, gy, gh, ctx.impl)
    return (*g[:5], None, g[5] if ctx.has_h0 else None, None)


ssd_scan.register_autograd(_ssd_backward, setup_context=_ssd_setup)


# -- Mamba-1: selective scan (no carried state: mamba-ssm takes no initial state) ----------


def _sscan(impl: str, u, dt, A, B, C):
    if impl == "cuda":
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        t = lambda v: v.transpose(1, 2).contiguous()
        return selective_scan_fn(t(u), t(dt), A, t(B), t(C)).transpose(1, 2)
    return zoo_selective_scan(u, dt, A, B, C)[0]


@torch.library.custom_op("zoo_mamba::selective_scan", mutates_args=())
def selective_scan(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, impl: str) -> Tensor:
    """y (b, T, D) as `reference.selective_scan_ref` from a zero state."""
    return _sscan(impl, u, dt, A, B, C).contiguous()


@selective_scan.register_fake
def _(u, dt, A, B, C, impl):
    return u.new_empty(u.shape)


@torch.library.custom_op("zoo_mamba::selective_scan_backward", mutates_args=())
def selective_scan_backward(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, gy: Tensor, impl: str
) -> list[Tensor]:
    return _vjp(lambda *a: _sscan(impl, *a), (u, dt, A, B, C), (gy,))


@selective_scan_backward.register_fake
def _(u, dt, A, B, C, gy, impl):
    return [torch.empty_like(t) for t in (u, dt, A, B, C)]


def _sscan_setup(ctx, inputs, output):
    *tensors, impl = inputs
    ctx.save_for_backward(*tensors)
    ctx.impl = impl


def _sscan_backward(ctx, gy):
    return (*selective_scan_backward(*ctx.saved_tensors, gy, ctx.impl), None)


selective_scan.register_autograd(_sscan_backward, setup_context=_sscan_setup)


# -- causal depthwise conv1d + SiLU (from a zero state) -----------------------------------------


def _conv(impl: str, x, weight, bias):
    if impl == "cuda":
        from causal_conv1d import causal_conv1d_fn

        return causal_conv1d_fn(x.transpose(1, 2), weight, bias, activation="silu").transpose(1, 2)
    return causal_conv(x, weight, bias, None)[0]


@torch.library.custom_op("zoo_mamba::causal_conv1d", mutates_args=())
def conv1d_silu(x: Tensor, weight: Tensor, bias: Tensor | None, impl: str) -> Tensor:
    """SiLU(depthwise causal conv): x (b, T, C), weight (C, W)."""
    return _conv(impl, x, weight, bias).contiguous()


@conv1d_silu.register_fake
def _(x, weight, bias, impl):
    return x.new_empty(x.shape)


@torch.library.custom_op("zoo_mamba::causal_conv1d_backward", mutates_args=())
def conv1d_silu_backward(x: Tensor, weight: Tensor, bias: Tensor | None, gy: Tensor, impl: str) -> list[Tensor]:
    return _vjp(lambda *a: _conv(impl, *a), (x, weight, bias), (gy,))


@conv1d_silu_backward.register_fake
def _(x, weight, bias, gy, impl):
    return [torch.empty_like(x), torch.empty_like(weight), x.new_empty(0) if bias is None else torch.empty_like(bias)]


def _conv_setup(ctx, inputs, output):
    x, weight, bias, impl = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.impl, ctx.has_bias = impl, bias is not None


def _conv_backward(ctx, gy):
    x, weight, bias = ctx.saved_tensors
    gx, gw, gb = conv1d_silu_backward(x, weight, bias if ctx.has_bias else None, gy, ctx.impl)
    return gx, gw, (gb if ctx.has_bias else None), None


conv1d_silu.register_autograd(_conv_backward, setup_context=_conv_setup)


# -- decoding: one token, functional wrappers of the in-place CUDA updates -------------------
# Inference only (no autograd): `paths.pick_step` takes them when the kernels are usable
# and grad is off, and the differentiable PyTorch functions otherwise.


@torch.library.custom_op("zoo_mamba::ssm_step", mutates_args=())
def ssm_step(h: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, impl: str) -> tuple[Tensor, Tensor]:
    """One SSM step for either mixer, dt already softplus'ed; returns (y, new h).

    Mamba-2: h (b, H, P, N), x (b, H, P), dt (b, H), A (H,), B, C (b, G, N).
    Mamba-1: h (b, D, N), x (b, D), dt (b, D), A (D, N), B, C (b, N)."""
    if impl == "cuda":
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update

        new = h.clone()
        if h.dim() == 4:  # the kernel wants per-channel dt and A for the head layout
            P, N = h.shape[2], h.shape[3]
            dt_ = dt[:, :, None].expand(-1, -1, P)
            A_ = A[:, None, None].expand(-1, P, N).to(torch.float32)
            y = selective_state_update(new, x, dt_, A_, B, C)
        else:
            y = selective_state_update(new, x, dt, A, B, C)
        return y, new
    y, new = ssm_step_torch(h, x, dt, A, B, C)
    return y.contiguous(), new.contiguous()


@ssm_step.register_fake
def _(h, x, dt, A, B, C, impl):
    return x.new_empty(x.shape), torch.empty_like(h)


@torch.library.custom_op("zoo_mamba::conv_step", mutates_args=())
def conv_step(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None, impl: str) -> tuple[Tensor, Tensor]:
    """One token through the conv + SiLU: x (b, C), conv_state (b, W-1, C)."""
    if impl == "cuda":
        from causal_conv1d import causal_conv1d_update

        state = conv_state.transpose(1, 2).contiguous()  # (b, C, W-1), updated in place
        y = causal_conv1d_update(x, state, weight, bias, activation="silu")
        return y, state.transpose(1, 2).contiguous()
    y, new = causal_conv_step(x, weight, bias, conv_state)
    return y.contiguous(), new.contiguous()


@conv_step.register_fake
def _(x, conv_state, weight, bias, impl):
    return x.new_empty(x.shape), torch.empty_like(conv_state)
