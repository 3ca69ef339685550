"""Document-reset checks (data.documents=reset): packed documents equal each document alone.

For a mixer (or a block around one) with `supports_resets`, in float64:

* "document resets": rows packed with several documents of varied lengths (one of
  length 1, a row whose first document begins at t=0 over a nonzero incoming
  state, and a row whose first document continues that state) give the outputs,
  the input gradients and the parameter gradients of each document run alone:
  from `init_state` with its first token marked as a start (a mixer whose reset
  differs from a plain first token, as RecurrentGemma's, is held to its own
  reset), the continuing one from the incoming state without resets; and the
  state `forward(return_state=True)` returns continues like the last document's own.
* "step with resets": `step(x_t, state, reset=r_t)` token by token equals forward
  with the same resets.

A mixer without resets is reported as skipped, "resets: not supported" (a run with
data.documents=reset refuses it), never as failed.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from zoo_core.interfaces import Mixer
from zoo_core.state import detach_state, select_rows
from zoo_core.testing.build import rel_err
from zoo_core.testing.report import Skip

CHECKS = ("document resets", "step with resets")

#: Document lengths per row, cycled over the batch and cut at seq_len. Row pattern 0 begins
#: a document at t=0 (over a nonzero incoming state); pattern 1 continues the incoming state.
LAYOUTS = (((1, 3, 1, 5, 2), True), ((4, 1, 2, 6, 1), False))
#: Relative tolerance: float64, so a mismatch is a bug and not rounding.
TOL = 1e-6


def packed_starts(T: int) -> Tensor:
    """(3, T) bool document starts for a plugin's own path tests, T >= 8: row 0 continues the
    incoming state, then documents of lengths 1, T - 7 and 3; row 1 starts at 0 with two
    length-1 documents and ends with one; row 2 has no start (one document going on)."""
    if T < 8:
        raise ValueError(f"packed_starts needs T >= 8, got {T}")
    r = torch.zeros(3, T, dtype=torch.bool)
    r[0, [3, 4, T - 3]] = True
    r[1, [0, 1, 2, T // 2 + 1, T - 1]] = True
    return r


def assert_paths_agree_with_resets(m: Mixer, naive, x: Tensor, state: Any, resets: Tensor) -> None:
    """A plugin's own path test with `resets`, float64: the fast forward equals `naive(m, x, state,
    resets)` (outputs within 1e-12, gradients of x and every parameter within 1e-10), and `step`
    token by token with each token's reset gives the same outputs and the same final state."""
    y, last = m(x, state, return_state=True, resets=resets)
    y_naive = naive(m, x, state, resets)
    g, params = torch.randn_like(y), [x, *m.parameters()]
    assert (y - y_naive).abs().max() < 1e-12
    for a, b in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(y_naive, params, g)):
        assert (a - b).abs().max() < 1e-10
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            o, state = m.step(x[:, t], state, reset=resets[:, t])
            outs.append(o)
    assert (torch.stack(outs, 1) - y).abs().max() < 1e-12
    assert all((state[k] - last[k]).abs().max() < 1e-12 for k in last if last[k].is_floating_point())


def spans(row: Tensor) -> list[tuple[int, int]]:
    """[begin, end) of each document in one row of starts (the first may continue the state)."""
    T = int(row.shape[0])
    cuts = [0] + [t for t in range(1, T) if row[t]] + [T]
    return list(zip(cuts[:-1], cuts[1:]))


def supports(module: nn.Module) -> str | None:
    """None when the module honours resets, else why not (the skip reason)."""
    mixer = module if isinstance(module, Mixer) else getattr(module, "mixer", None)
    if not getattr(mixer if mixer is not None else module, "supports_resets", False):
        return "resets: not supported (supports_resets = False)"
    for fn, word in ((module.forward, "resets"), (module.step, "reset")):
        params = inspect.signature(fn).parameters
        if word not in params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return f"resets: not supported ({type(module).__name__}.{fn.__name__} takes no {word}=)"
    return None


def documents(T: int, rows: int) -> tuple[Tensor, list[list[tuple[int, int, bool]]]]:
    """(resets (rows, T) bool, per row its documents as (start, stop, continues the incoming state))."""
    resets = torch.zeros(rows, T, dtype=torch.bool)
    spans = []
    for r in range(rows):
        lengths, reset_first = LAYOUTS[r % len(LAYOUTS)]
        row, t, i = [], 0, 0
        while t < T:
            stop = min(t + lengths[i % len(lengths)], T) if i < len(lengths) else T
            continues = t == 0 and not reset_first
            resets[r, t] = not continues
            row.append((t, stop, continues))
            t, i = stop, i + 1
        spans.append(row)
    return resets, spans


class DocumentChecks:
    """`checks` is the `SequenceChecks` of the module: its builder, sizes and seed."""

    def __init__(self, checks: Any) -> None:
        self.c = checks

    def _setup(self):
        c = self.c
        m = c.module(torch.float64)
        why = supports(m)
        if why:
            raise Skip(why)
        if c.T < 4:
            raise Skip(f"seq_len {c.T} is too short to pack documents (needs >= 4)")
        resets, spans = documents(c.T, c.B)
        g = torch.Generator().manual_seed(c.seed + 11)
        prefix = torch.randn(c.B, 5, c.dim, generator=g, dtype=torch.float64)
        with torch.no_grad():
            _, incoming = m(prefix, None, return_state=True)  # a nonzero state to start from
        return m, resets, spans, detach_state(incoming)

    def packed(self) -> str:
        c = self.c
        m, resets, spans, incoming = self._setup()
        x = c.x().requires_grad_(True)
        params = [p for p in m.parameters() if p.requires_grad]
        proj = torch.randn(x.shape, generator=torch.Generator().manual_seed(c.seed + 12), dtype=x.dtype)
        y, state = m(x, incoming, return_state=True, resets=resets)
        assert y.shape == x.shape, f"forward with resets: output shape {tuple(y.shape)} != {tuple(x.shape)}"
        got = torch.autograd.grad((y * proj).sum(), [x, *params], allow_unused=True)

        alone, total, last = torch.zeros_like(y), 0.0, []
        for r, row in enumerate(spans):
            start_state = select_rows(incoming, torch.tensor([r]))
            for a, b, continues in row:
                if continues:
                    ya, sa = m(x[r : r + 1, a:b], start_state, return_state=True)
                else:
                    first = torch.zeros(1, b - a, dtype=torch.bool)
                    first[0, 0] = True
                    ya, sa = m(x[r : r + 1, a:b], None, return_state=True, resets=first)
                alone[r, a:b] = ya[0]
                total = total + (ya[0] * proj[r, a:b]).sum()
            last.append(sa)
        want = torch.autograd.grad(total, [x, *params], allow_unused=True)

        errs = {"outputs": rel_err(y, alone)}
        errs["input gradients"] = rel_err(got[0], want[0])
        names = [n for n, p in m.named_parameters() if p.requires_grad]
        for name, a, b in zip(names, got[1:], want[1:]):
            if b is not None or a is not None:
                a = torch.zeros_like(b) if a is None else a
                b = torch.zeros_like(a) if b is None else b
                errs[f"the gradient of {name}"] = rel_err(a, b)
        worst = "outputs" if errs["outputs"] >= TOL else max(errs, key=errs.get)
        assert errs[worst] < TOL, (
            f"packed documents differ from each document alone in {worst} (rel err {errs[worst]:.2e}): "
            f"at a reset the state before must count as init_state"
        )
        # The returned state is the last document's: both continue the same way.
        nxt = torch.randn(c.B, 3, c.dim, generator=torch.Generator().manual_seed(c.seed + 13), dtype=x.dtype)
        with torch.no_grad():
            after, _ = m(nxt, detach_state(state))
            for r, sa in enumerate(last):
                ya, _ = m(nxt[r : r + 1], detach_state(sa))
                err = rel_err(after[r], ya[0])
                assert err < TOL, (
                    f"the state forward(return_state=True, resets=...) returns continues unlike the last "
                    f"document's own state (row {r}, rel err {err:.2e})"
                )
        n_docs = sum(len(row) for row in spans)
        return f"{n_docs} documents in {c.B} rows: rel err {max(errs.values()):.1e} (outputs and gradients)"

    def step(self) -> str:
        c = self.c
        m, resets, _, incoming = self._setup()
        x = c.x()
        with torch.no_grad():
            y, _ = m(x, incoming, resets=resets)
            state, outs = incoming, []
            for t in range(c.T):
                o, state = m.step(x[:, t], state, reset=resets[:, t])
                outs.append(o)
            err = rel_err(torch.stack(outs, 1), y)
        assert err < TOL, f"step with reset= differs from forward with the same resets (rel err {err:.2e})"
        return f"rel err {err:.1e} over {int(resets.sum())} resets"
