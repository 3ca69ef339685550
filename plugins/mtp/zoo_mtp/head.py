"""Multi-token prediction (Gloeckle et al. 2024, arXiv 2404.19737).

Head k (k = 1..n) reads the shared trunk's hidden state z_t and predicts token
x_{t+k}; head 1 is the ordinary next-token head. The training loss is

    L = sum_k w_k * (sum_t -log P_k(x_{t+k} | z_t)) / N_1

where N_1 counts the next-token targets (targets != IGNORE_INDEX). Dividing every head
by the same N_1 keeps L an exact per-token sum over micro-batches and ranks,
like the core's cross-entropy. Head k's targets are the batch's targets
shifted left by k-1; the last k-1 positions of a window have no target and
are ignored (the data sources stay unchanged).

Two forms of the heads:
* `independent` (Meta Lingua): head 1 is the usual unembedding (tied to the
  input embedding when `model.tie_embeddings`), heads 2..n each get their own
  unembedding matrix;
* `block` (the paper): every head, head 1 included, has one extra residual
  block of its own, then all heads share one unembedding. The paper uses a
  transformer layer per head; ours is RMSNorm + SwiGLU MLP (no mixer), so the
  plugin works with any mixer and depends on none.

Three ways to compute L, all equal (tests check losses and gradients):
* `reference.mtp_loss_reference`: the equation, position by position;
* `forward`: every head in one autograd graph (n heads' logits alive at once);
* `forward_backward`: the paper's memory trick, used by the core loop when
  `sequential_backward` is on: each head's forward and backward run in turn on
  a detached trunk output, accumulating the trunk gradient, so peak memory
  holds one head's logits, whatever n.

In eval mode `forward` returns head 1's next-token loss alone, so perplexity
and bits/byte mean what they mean for any other model; `logits` is head 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_core.blocks import RMSNorm, SwiGLU, swiglu_hidden
from zoo_core.cpu_linear import linear  # F.linear, through oneDNN on CPU when parallel.cpu_linear says so
from zoo_core.errors import UserError
from zoo_core.interfaces import IGNORE_INDEX, Head, HeadOutput

FORMS = ("independent", "block")


@dataclass
class MTPConfig:
    #: Number of future tokens predicted (head k predicts token t+k); 1 = plain next-token.
    n_heads: int = 4
    #: independent: one unembedding per head (Meta Lingua) |
    #: block: one extra block per head, shared unembedding (paper).
    form: str = "independent"
    #: Loss weight per head, used as given (not normalised); default all 1, the paper's plain sum.
    weights: list[float] | None = None
    #: Run each head's forward+backward in turn (the paper's trick): peak memory does not grow with n.
    sequential_backward: bool = True
    #: SwiGLU hidden size (multiple of dim) of each head's block in the `block` form.
    mlp_mult: float = 2.6667
    norm_eps: float = 1e-5


class HeadBlock(nn.Module):
    """One head's own layer in the `block` form: z + SwiGLU(RMSNorm(z)), then a final RMSNorm."""

    def __init__(self, dim: int, mlp_mult: float, eps: float) -> None:
        super().__init__()
        self.norm_in = RMSNorm(dim, eps)
        self.mlp = SwiGLU(dim, swiglu_hidden(dim, mlp_mult))
        self.norm_out = RMSNorm(dim, eps)

    def forward(self, z: Tensor) -> Tensor:
        return self.norm_out(z + self.mlp(self.norm_in(z)))


def shift_targets(targets: Tensor, k: int) -> Tensor:
    """Targets of head k+1 (0-based k): token t+k+1 sits at targets[:, t+k]; the last k positions get IGNORE_INDEX."""
    if k == 0:
        return targets
    return F.pad(targets[:, k:], (0, k), value=IGNORE_INDEX)


class MTPHead(Head):
    def __init__(self, dim: int, vocab_size: int, embedding: nn.Embedding | None, config: MTPConfig) -> None:
        super().__init__(dim, vocab_size, embedding, config)
        n = config.n_heads
        if n < 1:
            raise UserError(f"model.loss.n_heads={n}: multi-token prediction needs at least 1 head")
        if config.form not in FORMS:
            raise UserError(f"model.loss.form={config.form} is not one of {', '.join(FORMS)}")
        weights = [1.0] * n if config.weights is None else [float(w) for w in config.weights]
        if len(weights) != n:
            raise UserError(
                f"model.loss.weights has {len(weights)} entries but n_heads={n}; "
                f"give one weight per head, e.g. model.loss.weights=[{','.join(['1.0'] * n)}]"
            )
        if weights[0] <= 0 or any(w < 0 for w in weights):
            raise UserError(f"model.loss.weights={weights}: weights must be >= 0 and head 1's > 0")
        self.n_heads, self.weights, self.form = n, weights, config.form
        self.custom_backward = bool(config.sequential_backward)
        # Head 1's (or, in the block form, every head's) unembedding: tied to the input
        # embedding when given (a plain attribute, so FSDP shards it once, with the embedding).
        object.__setattr__(self, "_tied", embedding)
        self.unembed = None if embedding is not None else nn.Linear(dim, vocab_size, bias=False)
        if config.form == "independent":
            self.extra = nn.ModuleList(nn.Linear(dim, vocab_size, bias=False) for _ in range(n - 1))
            self.blocks = None
        else:
            self.extra = None
            self.blocks = nn.ModuleList(HeadBlock(dim, config.mlp_mult, config.norm_eps) for _ in range(n))

    # -- the heads ---------------------------------------------------------------
    def _shared_weight(self) -> Tensor:
        return self._tied.weight if self._tied is not None else self.unembed.weight

    def head_logits(self, h: Tensor, k: int) -> Tensor:
        """Logits of head k+1 (0-based k) for token t+k+1, from trunk states h (..., dim)."""
        if self.blocks is not None:
            return linear(self.blocks[k](h), self._shared_weight())
        weight = self._shared_weight() if k == 0 else self.extra[k - 1].weight
        return linear(h, weight)

    def logits(self, h: Tensor) -> Tensor:
        return self.head_logits(h, 0)

    def _head_nats(self, h: Tensor, targets: Tensor, k: int) -> tuple[Tensor, int, Tensor | None]:
        """Summed cross-entropy of head k+1, its target count, and (head 1 only) correct predictions."""
        tk = shift_targets(targets, k).reshape(-1)
        logits = self.head_logits(h, k)
        if logits.dtype in (torch.float16, torch.bfloat16):  # the softmax in fp32 under bf16 autocast
            logits = logits.float()
        logits = logits.reshape(-1, self.vocab_size)
        nats = F.cross_entropy(logits, tk, ignore_index=IGNORE_INDEX, reduction="sum")
        count = int((tk != IGNORE_INDEX).sum())
        correct = None
        if k == 0:
            with torch.no_grad():
                correct = ((logits.argmax(-1) == tk) & (tk != IGNORE_INDEX)).sum()
        return nats, count, correct

    def _output(self, total: Tensor, n1: int, per_head: list[tuple[float, int]], correct: Tensor) -> HeadOutput:
        metrics = {"accuracy": correct.float() / max(n1, 1)}
        for k, (nats, count) in enumerate(per_head):
            metrics[f"loss_head{k + 1}"] = nats / max(count, 1)  # mean over that head's own targets
        return HeadOutput(loss=total / max(n1, 1), n_tokens=n1, metrics=metrics)

    # -- losses ------------------------------------------------------------------
    def forward(self, h: Tensor, targets: Tensor) -> HeadOutput:
        if not self.training:  # evaluation: the next-token loss, as for any model
            nats, n1, correct = self._head_nats(h, targets, 0)
            return HeadOutput(loss=nats / max(n1, 1), n_tokens=n1, metrics={"accuracy": correct.float() / max(n1, 1)})
        total, per_head, correct = 0.0, [], None
        for k in range(self.n_heads):
            nats, count, c = self._head_nats(h, targets, k)
            correct = c if k == 0 else correct
            total = total + self.weights[k] * nats
            per_head.append((float(nats.detach()), count))
        return self._output(total, per_head[0][1], per_head, correct)

    def forward_backward(self, h: Tensor, targets: Tensor, loss_scale: float) -> HeadOutput:
        """Each head's forward then backward in turn: only one head's logits live at a time.
        `h` must be a leaf requiring grad; its `.grad` accumulates the trunk gradient."""
        if not h.requires_grad:
            raise ValueError("forward_backward needs h as a leaf with requires_grad (h.detach().requires_grad_())")
        n1 = int((targets != IGNORE_INDEX).sum())
        total, per_head, correct = 0.0, [], None
        for k in range(self.n_heads):
            nats, count, c = self._head_nats(h, targets, k)
            correct = c if k == 0 else correct
            (nats * (self.weights[k] * loss_scale / max(n1, 1))).backward()
            value = float(nats.detach())
            total += self.weights[k] * value
            per_head.append((value, count))
        return self._output(torch.tensor(total, dtype=torch.float64), n1, per_head, correct)

    def flops_per_token(self) -> float:
        unembed = 2.0 * self.dim * self.vocab_size * self.n_heads
        if self.blocks is None:
            return unembed
        return unembed + sum(2.0 * 3 * self.dim * b.mlp.hidden for b in self.blocks)
