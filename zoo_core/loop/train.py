"""The one training loop every architecture uses.

    zoo train [CONFIG] [key=value ...]
    torchrun --nproc-per-node N -m zoo_core.train [CONFIG] [key=value ...]

Global batch = micro batch x accumulation steps x world size. The data comes
as `global_batch` parallel streams; rank r owns a fixed slice of them and each
micro-batch a fixed sub-slice, so W ranks and 1 rank with W x accumulation
compute the same losses, and recurrent state carries per stream identically.

What the loop guarantees on faults, NaN and signals is docs/guarantees.md.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from zoo_core.config import load_config, resolve, save_config
from zoo_core.errors import EXIT_FAILED, Preempted, UserError, early_signal, keep_for_the_loop, stop_before_start
from zoo_core.interfaces import IGNORE_INDEX
from zoo_core.loop import checkpoint
from zoo_core.loop.components import build_source, build_tokenizer, source_vocab
from zoo_core.loop.cpu.memory import keep_freed_memory
from zoo_core.loop.distributed import World, close_world, init_world
from zoo_core.loop.evaluate import check_source_documents, document_resets, evaluate
from zoo_core.loop.generate import generate
from zoo_core.loop.metrics import (
    MetricsLog,
    lines_wanted,
    log_line,
    on_terminal,
    peak_memory_mb,
    progress_bar,
    step_line,
)
from zoo_core.loop.model import LanguageModel, meta_model, padded_vocab
from zoo_core.loop.optim import build_optimizer, lr_at, set_lr
from zoo_core.loop.parallelize import materialize, parallelize
from zoo_core.loop.paths import anchored
from zoo_core.loop.runs import check_run_dir
from zoo_core.loop.validate import batch_layout, check_request
from zoo_core.registry import get_registry
from zoo_core.state import detach_state

#: The signals that mean "checkpoint and stop" (SIGUSR1: Slurm's warning before the time limit).
#: SIGUSR2 is submitit's preemption and timeout signal (what `job._interrupt()` sends).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
#: The preemption signals, before the loop runs (SIGINT there is KeyboardInterrupt: exit 130).
EARLY_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Diverged(Exception):
    """The loss, the gradients, the weights or the optimizer state became NaN or inf."""

    exit_code = EXIT_FAILED


def run_config(config: str | None, overrides: Sequence[str]):
    """Config from a YAML file, or from an existing run directory (to resume it)."""
    if config and Path(config).is_dir():
        saved = Path(config) / "config.yaml"
        if not saved.exists():
            raise UserError(f"'{config}' is a directory without config.yaml; give a YAML file or a run directory")
        cfg = load_config(str(saved), overrides)
        cfg.runs_dir, cfg.name = str(Path(config).parent), Path(config).name
        return cfg
    return load_config(config, overrides)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: Any, registry: Any, world: World) -> None:
        self.cfg, self.registry, self.world = cfg, registry, world
        started = time.perf_counter()  # the run's clock (elapsed_s) counts the setup too
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.keep_freed_memory and world.device.type == "cpu":
            why_not = keep_freed_memory()
            if why_not and world.is_main:
                print(f"zoo: train.keep_freed_memory not applied ({why_not})", file=sys.stderr)
        if t.deterministic:
            # cuBLAS is deterministic only with a fixed workspace; must be set before its first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        seed_everything(t.seed)
        self.run_dir = Path(cfg.runs_dir) / cfg.name
        self.ckpt_root = self.run_dir / "checkpoints"

        self.tokenizer = build_tokenizer(cfg, registry)
        needed = max(self.tokenizer.vocab_size, source_vocab(cfg, registry))  # a synthetic source's own ids
        if cfg.model.vocab_size is None:
            cfg.model.vocab_size = padded_vocab(needed)
        elif cfg.model.vocab_size < needed:
            raise UserError(
                f"model.vocab_size={cfg.model.vocab_size} is smaller than the {needed} token ids of "
                f"the tokenizer and data source; leave it unset to derive it"
            )

        # Batch layout: which streams this rank and each micro-batch owns.
        G, W = t.global_batch, world.size
        micro = batch_layout(G, t.micro_batch, W)
        self.accum = G // (micro * W)
        first = world.rank * (G // W)
        self.micro_streams = [list(range(first + m * micro, first + (m + 1) * micro)) for m in range(self.accum)]

        # Prepare the data once (rank 0), then everyone maps it; its bar only on a terminal.
        progress = t.progress and world.is_main and on_terminal()
        # A refusal on rank 0 (a missing corpus, a damaged shard) reaches every rank, so the
        # others stop quietly instead of losing their peer in the middle of a collective.
        refused = None
        if world.is_main:
            try:
                check_source_documents(cfg, build_source(cfg, registry, self.tokenizer, "train", G, progress=progress))
            except UserError as exc:
                refused = exc
        why = world.broadcast_object(None if refused is None else str(refused))
        if refused is not None:
            raise refused
        if why is not None:
            raise UserError("")  # rank 0 prints the line
        self.train_source = build_source(cfg, registry, self.tokenizer, "train", G, progress=False)

        self.model = self._build_model()
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.autocast = self._autocast()
        self.train_flops, self.peak_flops = self._flops()
        self.step = 0
        self.tokens_seen = 0
        self.states: list[Any] = [None] * self.accum
        # Opened after the resume decision.
        self.log = MetricsLog(self.run_dir, cfg, enabled=world.is_main, started=started)
        self.signal_seen: int | None = None  # set by the handler on this rank only
        self.stop_requested = False  # agreed by all ranks (all-reduced each step)
        self.saved_step = -1

    # -- setup -----------------------------------------------------------------
    def _build_model(self) -> LanguageModel:
        # Meta device -> sharded -> initialised. The values come from one whole
        # copy initialised from the seed on the CPU, so every world size (and
        # GPU or CPU) starts from identical weights.
        model = meta_model(self.cfg.model, self.registry, self.cfg.model.vocab_size)
        model = materialize(parallelize(model, self.cfg.parallel, self.world), self._full_model, self.world)
        seed_everything(self.cfg.train.seed)  # rank 0 drew from the RNG for the full copy; realign
        return model

    def _full_model(self) -> LanguageModel:
        full = meta_model(self.cfg.model, self.registry, self.cfg.model.vocab_size)
        full.to_empty(device="cpu")
        torch.manual_seed(self.cfg.train.seed)
        full.init_weights()
        return full

    def _autocast(self):
        if self.cfg.parallel.mixed_precision == "bf16" and not self.world.distributed:
            return lambda: torch.autocast(self.world.device.type, dtype=torch.bfloat16)
        return None  # under FSDP, MixedPrecisionPolicy does the casting

    def _flops(self):
        """Training FLOPs per token and the peak they are measured against (MFU in the log)."""
        from zoo_core.loop.hardware import compute_dtype, device_peak

        peak = device_peak(self.world.device, compute_dtype(self.cfg)) if self.world.is_main else None
        if self.world.distributed:  # rank 0 calibrates a CPU alone, the others wait
            peak = self.world.broadcast_object(peak)
        return 3.0 * self.model.flops_per_token(self.cfg.data.seq_len), peak

    # -- checkpoints -------------------------------------------------------------
    def save(self) -> None:
        """Model, optimizer (DCP, resharding on load) and this rank's loader position,
        RNG states and carried recurrent state. The scheduler is a pure function of
        the step (`optim.lr_at`), so the step is all of its state.

        Only finite state is ever saved: a checkpoint is what the NaN guard names as
        the place to resume from."""
        if not self.state_is_finite():
            self.diverged(f"the weights or optimizer state hold NaN or inf after step {self.step}")
        tensors = {"rng.cpu": torch.get_rng_state()}
        if self.world.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.world.device)
        for m, st in enumerate(self.states):
            for key, value in _flatten(st, f"state.{m}").items():
                tensors[key] = value
        extra = {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.log.elapsed(),  # the run's clock goes on from here on a resume
            "data": self.train_source.state_dict(),
            "carry": [s is not None for s in self.states],
            "streams": self.micro_streams,
        }
        meta = {
            "step": self.step,
            "world_size": self.world.size,
            "global_batch": self.cfg.train.global_batch,
            "seq_len": self.cfg.data.seq_len,
        }
        checkpoint.save(
            self.ckpt_root,
            self.step,
            self.model,
            self.optimizer,
            self.world,
            extra,
            tensors,
            keep=self.cfg.train.keep_checkpoints,
            meta=meta,
        )
        self.saved_step = self.step

    def state_is_finite(self) -> bool:
        """Every weight and every optimizer-state tensor finite, on every rank (collective)."""
        bad = 0.0
        tensors = list(self.model.parameters())
        tensors += [v for st in self.optimizer.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
        for t in tensors:
            local = t.to_local() if hasattr(t, "to_local") else t
            if local.is_floating_point() and not bool(torch.isfinite(local).all()):
                bad = 1.0
                break
        flag = self.world.all_reduce_sum(torch.tensor([bad], dtype=torch.float64))
        return float(flag[0]) == 0.0

    def diverged(self, what: str) -> None:
        """Stop: one line naming the last finite checkpoint and how to go on from it."""
        last = checkpoint.latest(self.ckpt_root)
        lower = f"{self.cfg.optim.lr / 10:.3g}"
        where = (
            f"the last finite checkpoint is {last} (step {int(last.name[5:])})"
            if last is not None
            else "no checkpoint was saved yet"
        )
        raise Diverged(
            f"{what}; nothing was saved, {where}; resume from it with a lower learning rate: "
            f"zoo train {self.run_dir} optim.lr={lower} (or raise optim.warmup_steps)"
            if self.world.is_main
            else ""
        )

    def maybe_resume(self) -> bool:
        """Load the newest checkpoint, if any; cut the logs back to its step.
        Returns False when the run is already finished (then nothing is written)."""
        # Rank 0 decides which checkpoint, so every rank loads the same one.
        if self.world.is_main:
            checkpoint.clean_partial(self.ckpt_root)
            found = checkpoint.latest(self.ckpt_root)
            info = (str(found), checkpoint.read_meta(found)) if found is not None else None
        self.world.barrier()
        info = self.world.broadcast_object(info if self.world.is_main else None)
        if info is None:
            self.log.open(0)  # a run killed before its first checkpoint starts its log again
            return True
        if info[1].get("step", 0) >= self.cfg.train.steps:
            self.step = step = info[1].get("step", 0)  # what the finished run reached, for the caller
            if self.world.is_main:
                print(
                    f"zoo: {self.run_dir} is finished (step {step} of train.steps={self.cfg.train.steps}); "
                    f"nothing was changed. To train it further: zoo train {self.run_dir} "
                    f"train.steps={max(2 * step, step + 1)}"
                )
            return False
        path, meta = Path(info[0]), info[1]
        if meta.get("weights_only"):  # `zoo import`: weights, no training state; a fresh optimizer
            checkpoint.load_model(path, self.model)
            if self.world.is_main:
                self._say(f"{self.run_dir}: training from the imported weights in {path.name}")
            self.log.open(0)  # step 0: nothing was logged before
            return True
        written_by = meta.get("world_size")
        if written_by != self.world.size:
            raise UserError(
                f"{path} was written by {written_by} ranks and this run has {self.world.size}; "
                f"the data-loader position is per rank, so resume with --nproc {written_by} "
                f"(eval, generate and export load it with any number of processes)"
            )
        extra, tensors = checkpoint.load(path, self.model, self.optimizer, self.world)
        if not self.state_is_finite():
            raise UserError(
                f"{path} holds NaN or inf weights (it was saved before zoo checked); move it away "
                f"(mv {path} {path.parent / ('bad-' + path.name)}) to resume from the one before"
                if self.world.is_main
                else ""
            )
        self.step, self.tokens_seen = extra["step"], extra["tokens_seen"]
        self.saved_step = self.step
        self.train_source.load_state_dict(extra["data"])
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and self.world.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.world.device)
        carried = extra.get("carry", [])
        if carried and all(carried):
            saved_streams = extra.get("streams", self.micro_streams)
            saved = [
                _unflatten(self.model_state_template(len(streams)), tensors, f"state.{m}", self.world.device)
                for m, streams in enumerate(saved_streams)
            ]
            # A changed micro_batch regroups the same streams' rows.
            self.states = (
                saved if saved_streams == self.micro_streams else _regroup(saved, saved_streams, self.micro_streams)
            )
        self.log.open(self.step, extra.get("elapsed_s"))  # older checkpoints: the log's last record
        if self.world.is_main:
            self._say(f"resumed {self.run_dir} from step {self.step}")
        return True

    def model_state_template(self, batch: int) -> Any:
        inner = self.model
        return inner.init_state(batch, device=self.world.device)

    # -- one optimizer step ---------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        cfg, world = self.cfg, self.world
        lr = lr_at(self.step, cfg.train.steps, cfg.optim)
        set_lr(self.optimizer, lr)
        batches = [self.train_source.batch(streams) for streams in self.micro_streams]
        count = torch.tensor([sum(int((b[1] != IGNORE_INDEX).sum()) for b in batches)], dtype=torch.float64)
        global_count = float(world.all_reduce_sum(count)[0])
        sums = torch.zeros(4, dtype=torch.float64)  # nats, tokens, accuracy*tokens, stop flag
        head_sums: dict[str, float] = {}  # the head's other metrics (e.g. per-head losses) x tokens
        carry = cfg.train.carry_state
        for m, batch in enumerate(batches):
            inputs, targets = batch[0].to(world.device), batch[1].to(world.device)
            # FSDP averages gradients over ranks; scale so the result is the global token mean.
            scale = world.size / global_count
            with self.autocast() if self.autocast else nullcontext():
                out, new_state = self.model(
                    inputs,
                    targets,
                    state=self.states[m] if carry else None,
                    return_state=carry,
                    backward_scale=int((targets != IGNORE_INDEX).sum()) * scale,
                    **document_resets(batch, cfg.data.documents, world.device),
                )
            if out.trunk_grad is not None:  # a custom_backward head ran its own backward inside forward
                h, grad = out.trunk_grad
                h.backward(grad)
            else:
                (out.loss * out.n_tokens * scale).backward()
            if carry:
                self.states[m] = detach_state(new_state)
            acc = float(out.metrics.get("accuracy", 0.0))
            for key, value in out.metrics.items():
                if key != "accuracy":
                    head_sums[key] = head_sums.get(key, 0.0) + float(value) * out.n_tokens
            sums += torch.tensor(
                [float(out.loss.detach()) * out.n_tokens, out.n_tokens, acc * out.n_tokens, 0.0], dtype=torch.float64
            )
        sums[3] = float(self.signal_seen is not None)  # one rank's signal stops every rank at the same step
        world.all_reduce_sum(sums)
        self.stop_requested = bool(sums[3] > 0)
        loss = float(sums[0] / max(sums[1], 1))
        head_metrics: dict[str, float] = {}
        if head_sums:  # the same keys on every rank, since every rank has the same head
            keys = sorted(head_sums)
            values = world.all_reduce_sum(torch.tensor([head_sums[k] for k in keys], dtype=torch.float64))
            head_metrics = {k: float(v / max(sums[1], 1)) for k, v in zip(keys, values)}
        if not math.isfinite(loss):
            self.diverged(f"loss is {loss} at step {self.step + 1}")
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip or float("inf"), foreach=False)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        if not math.isfinite(float(grad_norm)):  # the same global norm on every rank
            self.diverged(f"the gradient norm is {float(grad_norm)} at step {self.step + 1}")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += cfg.train.global_batch * cfg.data.seq_len
        return {
            "loss": loss,
            "accuracy": float(sums[2] / max(sums[1], 1)),
            "grad_norm": float(grad_norm),
            "lr": lr,
            **head_metrics,
        }

    # -- evaluation and samples ---------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        t = self.cfg.train
        source = build_source(self.cfg, self.registry, self.tokenizer, "val", t.eval_batch_size, progress=False)
        check_source_documents(self.cfg, source)
        docs = self.cfg.data.documents
        return evaluate(self.model, source, self.world, t.eval_batches, t.carry_state, self.autocast, documents=docs)

    def sample(self) -> str:
        t = self.cfg.train
        # Documents are separated by EOS in the prepared data, so an empty prompt starts after one.
        prompt = self.tokenizer.encode(t.sample_prompt) or [
            self.tokenizer.eos_id if self.tokenizer.eos_id is not None else self.tokenizer.bos_id
        ]
        docs = self.cfg.data.documents
        ids = generate(self.model, [prompt], t.sample_tokens, temperature=0.8, top_k=50, seed=t.seed, documents=docs)[0]
        self.model.train()
        text = t.sample_prompt + self.tokenizer.decode(ids)
        if self.world.is_main:
            (self.run_dir / "samples").mkdir(exist_ok=True)
            (self.run_dir / "samples" / f"step-{self.step:08d}.txt").write_text(text)
        return text

    # -- the loop --------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        # Only a flag: the step finishes, every rank agrees to stop, then one checkpoint is saved.
        # A repeated signal (torchrun forwarding the one the terminal sent) changes nothing.
        if self.signal_seen is None:
            self.signal_seen = signum

    def _say(self, text: str) -> None:
        """A line beside the bar on a terminal; a timestamped line off one (rank 0 calls it)."""
        if lines_wanted():
            log_line(text)
        else:
            tqdm.write(text)

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            self.log.close()  # trackers flushed and closed, whatever ended the run

    def _run(self) -> dict[str, Any]:
        cfg, world, t = self.cfg, self.world, self.cfg.train
        # Signals first: one that comes while resuming is kept, and acted on after the next step.
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        if early_signal and self.signal_seen is None:
            self.signal_seen = early_signal.pop()
        if not self.maybe_resume():  # before writing the config: a refused resume leaves the run as it was
            return {"step": self.step, "finished": True, "run_dir": str(self.run_dir)}
        if world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(anchored(cfg), self.run_dir / "config.yaml")  # data paths absolute
        self.model.train()
        # On a terminal a bar (train.progress); off one (a Slurm log) a timestamped line per record.
        bar = progress_bar(
            total=t.steps, initial=self.step, desc=cfg.name, unit="step", enabled=t.progress and world.is_main
        )
        lines = lines_wanted(world.is_main)
        last_val: dict[str, float] = {}
        timer, tokens_at_timer = time.perf_counter(), self.tokens_seen
        loop_start, first_step = timer, self.step
        interrupted = False
        while self.step < t.steps:
            metrics = self.train_step()
            bar.update(1)
            if self.step % t.log_every == 0 or self.step == t.steps:
                elapsed = time.perf_counter() - timer
                tps = (self.tokens_seen - tokens_at_timer) / max(elapsed, 1e-9)
                timer, tokens_at_timer = time.perf_counter(), self.tokens_seen
                record = {
                    "step": self.step,
                    **metrics,
                    "tokens_per_s": tps,
                    "tokens_seen": self.tokens_seen,
                    "peak_mem_mb": peak_memory_mb(world.device),
                }
                if self.peak_flops:  # tokens_per_s counts every rank's tokens: against every rank's peak
                    mfu = self.train_flops * tps / (self.peak_flops * world.size)
                    if mfu <= 1.0:
                        record["mfu"] = mfu
                    else:  # above the peak: the peak is wrong (a CPU calibrated under load), not the run
                        self.peak_flops = None
                        if world.is_main:
                            warnings.warn(
                                f"MFU left out: this run measured {mfu:.0%} of the device's peak, so the peak "
                                "is wrong (on CPU: calibrated while the machine was busy); delete the 'peak' "
                                "entries of the zoo cache's cpu-tune.json to measure it again",
                                stacklevel=2,
                            )
                self.log.write(record)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{tps:,.0f}")
                if lines:
                    per_step = (time.perf_counter() - loop_start) / max(self.step - first_step, 1)
                    eta = per_step * (t.steps - self.step)
                    log_line(step_line(self.step, t.steps, record, self.log.elapsed(), eta))
            if t.eval_every and self.step % t.eval_every == 0 and self.step < t.steps:
                last_val = self._log_validation(bar)
            if self.stop_requested:
                interrupted = True
                break
            if t.ckpt_every and self.step % t.ckpt_every == 0 and self.step < t.steps:
                self.save()
        bar.close()
        if interrupted:
            if self.saved_step != self.step:
                self.save()
            message = ""
            if world.is_main:
                name = signal.Signals(self.signal_seen).name if self.signal_seen else "sent to another rank"
                nproc = f" --nproc {world.size}" if world.size > 1 else ""
                message = (
                    f"preempted: stopped by signal at step {self.step} ({name}); checkpoint saved in "
                    f"{self.ckpt_root / f'step-{self.step:08d}'}; resume with: zoo train {self.run_dir}{nproc}"
                )
                print(f"zoo: {message}", file=sys.stderr, flush=True)
                _report_preempted(self.run_dir, self.step)
            return {"step": self.step, "interrupted": True, "preempted": message, "run_dir": str(self.run_dir)}
        if self.step >= t.steps and not last_val.get("final"):
            last_val = self._log_validation(None)
        if self.saved_step != self.step:
            self.save()
        text = self.sample() if t.sample_tokens else ""
        if world.is_main:
            print(
                f"val bits/byte {last_val['bpb']:.4f}  loss {last_val['loss']:.4f}  "
                f"ppl {last_val['ppl']:.2f}  at step {self.step}"
            )
            if text:
                print("sample: " + text)
        return {"step": self.step, "val": last_val, "sample": text, "run_dir": str(self.run_dir)}

    def _log_validation(self, bar) -> dict[str, float]:
        val = self.validate()
        self.log.write({"step": self.step, **{f"val_{k}": v for k, v in val.items()}})
        if bar is not None and self.world.is_main:
            self._say(f"step {self.step}: val bits/byte {val['bpb']:.4f}")
        return {**val, "final": self.step >= self.cfg.train.steps}


def _report_preempted(run_dir: Path, step: int) -> None:
    """Tell `run_torchrun` (zoo's launcher) that the ranks stopped on a signal, so it exits
    "preempted" while torchrun sees its workers succeed (any other status is a failure to it)."""
    import json

    from zoo_core.loop.distributed import STATUS_ENV

    status = os.environ.get(STATUS_ENV)
    if status:
        Path(status).write_text(json.dumps({"preempted": True, "step": step, "run_dir": str(run_dir)}))


def _flatten(state: Any, prefix: str) -> dict[str, torch.Tensor]:
    from torch.utils._pytree import tree_flatten

    leaves, _ = tree_flatten(state)
    return {f"{prefix}.{i}": leaf for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)}


def _regroup(saved: list[Any], saved_streams: list[list[int]], streams: list[list[int]]) -> list[Any]:
    """Carried states re-split into a new micro-batch layout of the same streams."""
    from torch.utils._pytree import tree_flatten, tree_unflatten

    where = {s: (m, r) for m, group in enumerate(saved_streams) for r, s in enumerate(group)}
    missing = [s for group in streams for s in group if s not in where]
    if missing:
        raise UserError(
            f"the checkpoint carries no recurrent state for streams {missing[:4]}; "
            f"resume with the same train.global_batch and world size"
        )
    flat = [tree_flatten(st) for st in saved]
    spec = flat[0][1]
    out = []
    for group in streams:
        rows = [where[s] for s in group]
        leaves = [
            torch.cat([flat[m][0][i][r : r + 1] for m, r in rows]) if isinstance(leaf, torch.Tensor) else leaf
            for i, leaf in enumerate(flat[0][0])
        ]
        out.append(tree_unflatten(leaves, spec))
    return out


def _unflatten(template: Any, tensors: dict[str, torch.Tensor], prefix: str, device: Any) -> Any:
    from torch.utils._pytree import tree_flatten, tree_unflatten

    leaves, spec = tree_flatten(template)
    restored = [
        tensors[f"{prefix}.{i}"].to(device) if isinstance(leaf, torch.Tensor) else leaf for i, leaf in enumerate(leaves)
    ]
    return tree_unflatten(restored, spec)


def train(config: str | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train (or resume) a run. SIGTERM, SIGUSR1 or SIGUSR2 before the loop starts raises
    StoppedBeforeStart in a single process (nothing was written); on one of N ranks it is kept,
    and every rank stops after the first step with one checkpoint."""
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    # One of N ranks (torchrun, or a Slurm task, which exports RANK) keeps the signal for the loop.
    early = keep_for_the_loop if "RANK" in os.environ else stop_before_start
    for sig in EARLY_SIGNALS:
        signal.signal(sig, early)
    # The Trainer sets these process-wide; put them back for in-process callers (tests, notebooks).
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    world = None
    try:
        registry = get_registry()
        cfg = resolve(run_config(config, overrides), registry)
        world = init_world(cfg.train.device)
        check_request(cfg, registry, world.size)  # the whole request, before anything is allocated or written
        check_run_dir(Path(cfg.runs_dir) / cfg.name)  # a file or another program's folder in its place
        return Trainer(cfg, registry, world).run()
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        early_signal.clear()  # one that came too late for this run is not the next run's
        if world is not None:
            close_world()


def train_cli(config: str | None, overrides: Sequence[str]) -> dict[str, Any]:
    """`train` for a command line: a stop on a signal becomes the "preempted" exit status."""
    result = train(config, overrides)
    # The Trainer has printed the one line (rank 0). Under torchrun a worker exits 0: torchrun
    # reports any other status as a failure of the job, and zoo's own launcher (run_torchrun)
    # learns of the preemption from its status file and exits "preempted" itself.
    if result.get("interrupted") and "TORCHELASTIC_RUN_ID" not in os.environ:
        raise Preempted("")
    return result


def _die_with_parent() -> None:
    """Under torchrun: if the launcher dies (even by SIGKILL), this rank gets SIGTERM, so it
    checkpoints and stops instead of running on as an orphan (Linux; elsewhere a no-op)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `python -m zoo_core.train` (the documented name, an alias of
    zoo_core.loop.train: what torchrun launches)."""
    from zoo_core.loop.guard import run_guarded

    argv = list(sys.argv[1:] if argv is None else argv)
    config = argv.pop(0) if argv and "=" not in argv[0] else None
    _die_with_parent()
    return run_guarded(lambda: train_cli(config, argv))


if __name__ == "__main__":
    sys.exit(main())
