"""Validation loss, perplexity and bits per byte (Languini's normalised perplexity).

bits/byte = (mean nats per token / ln 2) x (tokens per UTF-8 byte of the split),
so models with different tokenizers compare fairly. Training (`Trainer.validate`)
and `zoo eval` share `evaluate`; `evaluate_splits` adds the named extra splits.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from zoo_core.errors import UserError
from zoo_core.interfaces import DataSource
from zoo_core.loop.distributed import World
from zoo_core.loop.metrics import duration, lines_wanted, log_line, on_terminal, progress_bar
from zoo_core.state import detach_state

#: Extra splits `zoo eval` adds to the run's own validation split by default.
DEFAULT_OOD = ("milton",)


def full_pass(source: DataSource) -> int | None:
    """Batches that read every stream's section once without wrapping around
    (None if the source cannot say). A source may state it as `windows`."""
    windows = getattr(source, "windows", None)
    if windows:
        return int(windows)
    section, seq_len = getattr(source, "section", None), getattr(source, "seq_len", None)
    if callable(section) and seq_len:
        # Each window reads seq_len + 1 tokens and the next starts seq_len later.
        return min((section(s)[1] - 1) // seq_len for s in range(source.n_streams))
    return None


def document_resets(batch: tuple[torch.Tensor, ...], documents: str, device: Any = None) -> dict[str, Any]:
    """The model's keyword for a data batch: `resets=` the document starts under
    data.documents=reset; nothing under stream (the keyword stays absent)."""
    if documents != "reset":
        return {}
    if len(batch) < 3:
        raise UserError("data.documents=reset: the data source returned no document starts; use data.documents=stream")
    return {"resets": batch[2].to(device)}


def check_source_documents(cfg: Any, source: DataSource) -> None:
    """A built source that cannot report documents after all (a prepared directory from before
    the document index) is refused under data.documents=reset, before training."""
    if cfg.data.documents == "reset" and not getattr(source, "reports_documents", False):
        raise UserError(
            f"data.documents=reset: the data ({cfg.data.source.get('path') or cfg.data.source['name']}) "
            f"records no document boundaries (prepared before the document index); prepare it again "
            f"(zoo data prepare) or use data.documents=stream"
        )


def summarize(nats: float, count: float, correct: float, bytes_per_token: float) -> dict[str, float]:
    """Metrics from summed nats, target tokens and correct predictions (after the all-reduce)."""
    loss = nats / max(count, 1)
    return {
        "loss": loss,
        "ppl": math.exp(min(loss, 50.0)),
        "bpb": loss / math.log(2) / bytes_per_token,
        "accuracy": correct / max(count, 1),
        "tokens": int(count),
    }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    source: DataSource,
    world: World,
    n_batches: int | None = None,
    carry_state: bool = False,
    autocast: Callable | None = None,
    progress: bool = False,
    desc: str = "eval",
    documents: str = "stream",
) -> dict[str, float]:
    """Mean loss over `n_batches` windows of every stream (None or <= 0: one full pass),
    the streams split over ranks and the sums all-reduced, so any world size gives the same numbers.
    `progress`: a bar over the batches on a terminal (rank 0; nothing off a terminal).
    `documents` (data.documents): under reset the model sees the source's document starts, as in training."""
    if source.n_streams < world.size:
        raise UserError(
            f"evaluation has {source.n_streams} streams for {world.size} ranks; give every rank one: "
            f"raise the eval batch size (--batch-size / train.eval_batch_size) to >= {world.size}"
        )
    limit = full_pass(source)
    if n_batches is None or n_batches <= 0:
        if limit is None:
            raise UserError(
                f"{type(source).__name__} cannot say how long one pass is; give a number of batches "
                f"(--batches / train.eval_batches)"
            )
        n_batches = limit
    elif limit is not None:
        n_batches = min(n_batches, limit)  # never count a window twice
    was_training = model.training
    model.eval()
    streams = list(range(world.rank, source.n_streams, world.size))
    totals = torch.zeros(3, dtype=torch.float64)  # nats, tokens, correct
    state = None
    bar = progress_bar(total=n_batches, desc=desc, unit="batch", leave=False, enabled=progress and world.is_main)
    for _ in range(n_batches):
        bar.update(1)
        batch = source.batch(streams)
        inputs, targets = batch[0].to(world.device), batch[1].to(world.device)
        docs = document_resets(batch, documents, world.device)
        with autocast() if autocast else nullcontext():
            out, state = model(inputs, targets, state=state, return_state=carry_state, **docs)
        state = detach_state(state) if carry_state else None
        totals += torch.tensor(
            [float(out.loss) * out.n_tokens, out.n_tokens, float(out.metrics.get("accuracy", 0.0)) * out.n_tokens],
            dtype=torch.float64,
        )
    bar.close()
    world.all_reduce_sum(totals)
    model.train(was_training)
    return summarize(*totals.tolist(), bytes_per_token=source.bytes_per_token)


def split_source(
    cfg: Any, registry: Any, tokenizer: Any, split: str, n_streams: int, progress: bool = False
) -> DataSource:
    """`val`/`train` are the run's own splits; anything else is a named corpus or a path,
    tokenized with the run's tokenizer and used whole as an evaluation split."""
    from zoo_core.loop.components import build_source

    if split in ("val", "train"):
        return build_source(cfg, registry, tokenizer, split, n_streams, progress=progress)
    from zoo_core.config import to_dataclass

    entry = registry.get("data", "corpus")
    # val_fraction 0: all of the text lands in the train split, which is then the whole corpus.
    options = to_dataclass({"name": "corpus", "path": split, "val_fraction": 0.0}, entry.config_cls)
    return entry.factory(
        options,
        tokenizer=tokenizer,
        split="train",
        seq_len=cfg.data.seq_len,
        n_streams=n_streams,
        seed=cfg.train.seed,
        cache_dir=cfg.data.cache_dir,
        progress=progress,
    )


def evaluate_splits(
    model: torch.nn.Module,
    cfg: Any,
    registry: Any,
    tokenizer: Any,
    world: World,
    splits: Sequence[str],
    n_batches: int | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    carry_state: bool | None = None,
    autocast: Callable | None = None,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """`evaluate` on each split; rank 0 prepares a split before the other ranks open it.
    `progress` (rank 0): bars while preparing and evaluating on a terminal; off one
    (a Slurm log), a timestamped line as each split finishes."""
    if seq_len:
        cfg = copy.deepcopy(cfg)
        cfg.data.seq_len = seq_len
    n_streams = batch_size or cfg.train.eval_batch_size
    carry = cfg.train.carry_state if carry_state is None else carry_state
    results: dict[str, dict[str, float]] = {}
    lines = progress and world.is_main and lines_wanted()
    started = time.perf_counter()
    for i, split in enumerate(splits):
        if world.is_main:
            split_source(cfg, registry, tokenizer, split, n_streams, progress=progress and on_terminal())
        world.barrier()
        source = split_source(cfg, registry, tokenizer, split, n_streams)
        check_source_documents(cfg, source)
        results[split] = r = evaluate(
            model, source, world, n_batches, carry, autocast, progress, f"eval {split}", cfg.data.documents
        )
        if lines:
            log_line(
                f"eval {i + 1}/{len(splits)} {split}: bpb {r['bpb']:.4f} loss {r['loss']:.4f} "
                f"({r['tokens']:,} tokens) elapsed {duration(time.perf_counter() - started)}"
            )
    return results


def parse_splits(text: str | None) -> list[str]:
    """`--splits val,milton` -> ['val', 'milton']; the default is the run's val split plus DEFAULT_OOD."""
    if text is None:
        return ["val", *DEFAULT_OOD]
    splits = [s.strip() for s in text.split(",") if s.strip()]
    if not splits:
        raise UserError(
            "--splits is empty; give e.g. --splits val,milton (a split is val, train, a named corpus or a path)"
        )
    return splits
