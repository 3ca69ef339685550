"""The contracts between the core and its plugins.

State ("cache") convention, shared by every mixer, block and the model:
a state is a pytree (tensor, tuple, list or dict of tensors) whose tensors all
have the batch as their first dimension. The core can then detach it between
training steps, select or concatenate rows, and checkpoint it, without knowing
what is inside (see `zoo_core.state`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

State = Any  # a pytree of tensors, batch first

#: The target a loss skips (a data source's unscored positions): PyTorch's cross-entropy default.
IGNORE_INDEX = -100


class Mixer(nn.Module):
    """A causal sequence mixer: (batch, time, dim) -> (batch, time, dim).

    Subclasses take `(dim, config)` where `config` is an instance of the
    dataclass they were registered with, and implement:

    * `forward(x, state=None, return_state=False)` -> `(y, new_state)`.
      Output t depends only on inputs <= t and on `state`, the state after a
      previous segment of the same stream (or `init_state`). `new_state` is the
      state after the last position when `return_state` is true, else None.
      This one method serves plain training (state None), state carried across
      segments (truncated BPTT), and prefill for generation.
      With `supports_resets`, forward also takes `resets=None`: a bool tensor
      (batch, time), True at each t where a new document begins (data.documents=
      reset). The mixer then computes t and later as if its state before t were
      `init_state`: a recurrence's decay is zero at t, a short convolution sees
      no input before t, attention attends only within the document and RoPE
      positions restart at 0. Packed documents give the outputs and gradients
      of each document run alone (`zoo check` tests it).
    * `step(x, state)` -> `(y, new_state)` for one token, x of shape (batch, dim).
      The default runs `forward` on a length-1 segment; recurrent mixers
      override it with their O(1) recurrence. With `supports_resets` it takes
      `reset=None`, a bool (batch,): rows whose document starts at this token.
    * `init_state(batch_size, device, dtype)`: the state before any token.
    * `flops_per_token(seq_len)`: forward FLOPs per token (multiply-add = 2)
      at this sequence length, for throughput and MFU.
    * `state_size(seq_len)`: bytes per sequence kept for decoding after
      `seq_len` tokens (the KV cache for attention, h for an RNN).
    * `reset_parameters()`: initialise every parameter and buffer; the core
      builds models on the meta device and calls it after materialising.
    """

    #: Whether the default block should add a channel MLP after this mixer.
    wants_mlp: bool = True
    #: Whether forward/step honour `resets` (document starts); data.documents=reset refuses a mixer without.
    supports_resets: bool = False

    def __init__(self, dim: int, config: Any = None) -> None:
        super().__init__()
        self.dim = dim
        self.config = config

    def forward(
        self, x: Tensor, state: State = None, return_state: bool = False, resets: Tensor | None = None
    ) -> tuple[Tensor, State]:
        raise NotImplementedError

    def step(self, x: Tensor, state: State, reset: Tensor | None = None) -> tuple[Tensor, State]:
        if reset is None:
            y, state = self.forward(x[:, None], state, return_state=True)
        else:
            y, state = self.forward(x[:, None], state, return_state=True, resets=reset[:, None])
        return y[:, 0], state

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> State:
        raise NotImplementedError

    def flops_per_token(self, seq_len: int) -> float:
        raise NotImplementedError

    def state_size(self, seq_len: int) -> int:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        for m in self.children():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()


class Block(nn.Module):
    """Composes norm, mixer, residual and channel MLP for one layer.

    Takes `(dim, mixer, config, layer_idx, n_layers)` and implements
    `forward(x, state=None, return_state=False) -> (x, state)` and
    `step(x, state) -> (x, state)` with the mixer's state conventions, plus
    `flops_per_token(seq_len)` (mixer + everything else in the block). Under
    data.documents=reset the model calls `forward(..., resets=r)` and
    `step(..., reset=r)`: a block passes them to its mixer (see `Mixer`).
    """

    def __init__(self, dim: int, mixer: Mixer, config: Any, layer_idx: int, n_layers: int) -> None:
        super().__init__()
        self.dim, self.mixer, self.config = dim, mixer, config
        self.layer_idx, self.n_layers = layer_idx, n_layers

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> State:
        return self.mixer.init_state(batch_size, device, dtype)

    def state_size(self, seq_len: int) -> int:
        return self.mixer.state_size(seq_len)


@dataclasses.dataclass
class HeadOutput:
    """`loss` is the mean over the `n_tokens` counted targets (targets of -100 are
    ignored). `metrics` are scalar tensors or floats, averaged the same way."""

    loss: Tensor
    n_tokens: int
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Set by `LanguageModel.forward` after a `custom_backward` head ran its own
    #: backward: (trunk output h, d loss / d h); the loop finishes with h.backward.
    trunk_grad: tuple[Tensor, Tensor] | None = None


class Head(nn.Module):
    """Turns final hidden states (batch, time, dim) and targets into a loss.

    Takes `(dim, vocab_size, embedding, config)`; `embedding` is the model's
    input `nn.Embedding`, for weight tying. Implements `forward(h, targets) ->
    HeadOutput` and `logits(h) -> (batch, time, vocab)` for the next token,
    which evaluation and generation use.

    A head that must run its own backward (multi-token prediction runs each
    head's forward and backward in turn) sets `custom_backward = True` and
    implements `forward_backward(h, targets, loss_scale) -> HeadOutput`: it
    calls backward itself on `loss * loss_scale`; h is a leaf whose `.grad`
    the core then back-propagates through the trunk.
    """

    custom_backward: bool = False

    def __init__(self, dim: int, vocab_size: int, embedding: nn.Embedding, config: Any) -> None:
        super().__init__()
        self.dim, self.vocab_size, self.config = dim, vocab_size, config

    def logits(self, h: Tensor) -> Tensor:
        raise NotImplementedError

    def flops_per_token(self) -> float:
        return 2.0 * self.dim * self.vocab_size


class Tokenizer(abc.ABC):
    """Text <-> token ids. `fingerprint` changes whenever the mapping does."""

    vocab_size: int
    bos_id: int | None = None
    eos_id: int | None = None

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @property
    @abc.abstractmethod
    def fingerprint(self) -> str: ...


class DataSource(abc.ABC):
    """Yields token batches for `n_streams` parallel streams.

    Constructed as `factory(config, tokenizer=..., split=..., seq_len=...,
    n_streams=..., seed=...)`. Stream i is a fixed sequence of windows, so any
    rank owning stream i reads the same tokens whatever the world size: this is
    what makes training world-size invariant and lets recurrent state carry.

    * `batch(stream_ids)` -> `(inputs, targets)`, int64 tensors of shape
      (len(stream_ids), seq_len), advancing those streams by one window.
      Targets of -100 are ignored by the loss. A source that knows its
      documents sets `reports_documents = True` and returns `(inputs, targets,
      starts)`: starts a bool tensor of the same shape, True where inputs[:, t]
      is the first token of a document (data.documents=reset needs it).
    * `state_dict()` / `load_state_dict(d)`: JSON-serialisable position.
    * `bytes_per_token`: average UTF-8 bytes per target token, for bits/byte.
    * optional `declared_vocab(config)` (a staticmethod): for a source whose token ids are its
      own rather than the tokenizer's (a synthetic task), one more than the largest id it emits;
      the model's embedding then covers max(tokenizer, source) ids.
    """

    bytes_per_token: float = 1.0
    #: Whether `batch` returns document starts as a third tensor (see above).
    reports_documents: bool = False

    @abc.abstractmethod
    def batch(self, stream_ids: Sequence[int]) -> tuple[Tensor, ...]: ...

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def metrics(self, logits: Tensor, targets: Tensor) -> dict[str, float]:
        """Extra evaluation metrics for this data (e.g. recall accuracy)."""
        return {}


class Tracker(abc.ABC):
    """A mirror of metrics.jsonl (TensorBoard, wandb, ...), registered through `register_trackers`.

    On rank 0 the loop calls `check(cfg)` for every tracker whose `wanted(cfg)` is true before
    training (a missing library is one line, `UserError`), then builds it with the step the run
    resumes from and calls `log` with each record's numbers. metrics.jsonl stays the record."""

    @classmethod
    @abc.abstractmethod
    def wanted(cls, cfg: Any) -> bool:
        """Whether this run asks for the tracker (for the core's: train.tensorboard, train.wandb)."""

    @classmethod  # noqa: B027 -- an optional hook: the default accepts every run
    def check(cls, cfg: Any) -> None:
        """Raise `zoo_core.errors.UserError` when the tracker cannot run (a library missing)."""

    @abc.abstractmethod
    def __init__(self, run_dir: Any, cfg: Any, step: int) -> None:
        """Start logging after `step` (0 for a fresh run; on a resume, drop what lies past it)."""

    @abc.abstractmethod
    def log(self, numbers: dict[str, float], step: int) -> None:
        """One record's numeric values at `step`."""
