"""Faults in one process (docs/guarantees.md): NaN/inf, metrics.jsonl exactly once per step,
disk faults injected at every kind of write, a finished run started again.

Each case asserts the exit status, one line on stderr without a traceback, and that
the run on disk is unchanged or resumes to the losses of an uninterrupted run.
"""

import builtins
import errno
import io
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from zoo_core import checkpoint
from zoo_core.cli import main
from zoo_core.errors import EXIT_FAILED

TINY = [
    "name=t",
    "model.dim=32",
    "model.n_layers=2",
    "data.seq_len=32",
    "train.global_batch=4",
    "train.steps=6",
    "train.ckpt_every=2",
    "train.eval_every=0",
    "train.eval_batches=1",
    "train.eval_batch_size=4",
    "train.sample_tokens=4",
    "train.progress=false",
    "train.log_every=1",
    "optim.warmup_steps=1",
    "train.deterministic=true",
    "train.threads=1",
]


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def steps(run):
    return [r["step"] for r in records(run) if "loss" in r]


def losses(run):
    return [r["loss"] for r in records(run) if "loss" in r]


def one_line(capsys, code, expected, *contains):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("zoo: warning")]
    assert code == expected, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("zoo: "), err
    for text in contains:
        assert text in lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    assert main(["train", f"runs_dir={root}"] + TINY) == 0
    return root / "t"


# -- NaN / inf ---------------------------------------------------------------------------


def finite_checkpoint(ck):
    """Every tensor of a checkpoint (weights, optimizer state, RNG, carried state) is finite."""
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys
    from torch.utils._pytree import tree_leaves

    state = _load_state_dict_from_keys(checkpoint_id=str(ck))
    tensors = [t for t in tree_leaves(state) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    tensors += [t for t in load_file(str(ck / "extra-r0.safetensors")).values() if t.is_floating_point()]
    return len(tensors) > 10 and all(bool(torch.isfinite(t).all()) for t in tensors)


def test_divergence_never_keeps_non_finite_state(tmp_path, capsys):
    """lr 1e30 blows the weights up; the guard stops with one line naming the newest checkpoint,
    and every checkpoint left holds finite weights and optimizer state."""
    run = tmp_path / "t"
    code = main(
        ["train", f"runs_dir={tmp_path}"] + TINY + ["optim.lr=1e30", "train.ckpt_every=1", "optim.warmup_steps=0"]
    )
    line = one_line(capsys, code, EXIT_FAILED, "nothing was saved", "optim.lr=", f"zoo train {run}")
    last = checkpoint.latest(run / "checkpoints")
    assert last is not None and str(last) in line
    assert all(finite_checkpoint(ck) for ck in checkpoint.step_dirs(run / "checkpoints"))


def test_nan_loss_then_resume_from_the_named_checkpoint_with_a_lower_lr(tmp_path, monkeypatch, capsys):
    from zoo_core.losses import CrossEntropyHead

    real = CrossEntropyHead.forward
    calls = []

    def poisoned(self, h, targets):
        out = real(self, h, targets)
        calls.append(1)
        if len(calls) == 5:  # the fifth optimizer step
            out.loss = out.loss * float("nan")
        return out

    with monkeypatch.context() as m:
        m.setattr(CrossEntropyHead, "forward", poisoned)
        code = main(["train", f"runs_dir={tmp_path}"] + TINY)
    run = tmp_path / "t"
    line = one_line(capsys, code, EXIT_FAILED, "loss is nan at step 5", "step-00000004")
    assert finite_checkpoint(checkpoint.latest(run / "checkpoints"))
    advice = line.split("rate: ")[1].split(" (")[0].split()  # zoo train RUN optim.lr=X
    assert advice[:3] == ["zoo", "train", str(run)] and advice[3].startswith("optim.lr=")
    assert main(advice[1:]) == 0
    assert steps(run) == list(range(1, 7))


def test_nan_in_the_optimizer_state_is_never_saved(tmp_path, monkeypatch, capsys):
    from zoo_core import train as train_mod

    real = train_mod.Trainer.save

    def poison_then_save(self):
        if self.step == 4:
            for st in self.optimizer.state.values():
                st["exp_avg_sq"].view(-1)[0] = float("nan")
                break
        return real(self)

    monkeypatch.setattr(train_mod.Trainer, "save", poison_then_save)
    line = one_line(capsys, main(["train", f"runs_dir={tmp_path}"] + TINY), EXIT_FAILED, "step-00000002")
    assert "after step 4" in line
    assert [p.name for p in checkpoint.step_dirs(tmp_path / "t" / "checkpoints")] == ["step-00000002"]


# -- metrics.jsonl: exactly once per step ---------------------------------------------------


class Killed(BaseException):
    """Stands in for kill -9 at a chosen point: nothing after it runs."""


def test_killed_before_the_first_checkpoint_then_resumed_logs_each_step_once(tmp_path, monkeypatch, reference):
    from zoo_core.metrics import MetricsLog

    real = MetricsLog.write

    def die_at_step_3(self, record):
        real(self, record)
        if record.get("step") == 3:
            raise Killed()

    monkeypatch.setattr(MetricsLog, "write", die_at_step_3)
    with pytest.raises(Killed):
        main(["train", f"runs_dir={tmp_path}"] + TINY + ["train.ckpt_every=0"])
    assert steps(tmp_path / "t") == [1, 2, 3] and checkpoint.latest(tmp_path / "t" / "checkpoints") is None
    monkeypatch.setattr(MetricsLog, "write", real)
    assert main(["train", str(tmp_path / "t")]) == 0
    assert steps(tmp_path / "t") == list(range(1, 7))
    assert losses(tmp_path / "t") == losses(reference)


def test_torn_last_line_is_dropped_with_one_warning(tmp_path, capsys, reference):
    run = tmp_path / "t"
    assert main(["train", f"runs_dir={tmp_path}"] + TINY + ["train.steps=4"]) == 0
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 5, "loss": 2.7')  # a crash in the middle of a write
    capsys.readouterr()
    assert main(["train", str(run), "train.steps=6"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "metrics.jsonl" in warnings[0] and "last line" in warnings[0]
    assert steps(run) == list(range(1, 7))


def test_a_finished_run_started_again_says_so_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "t"
    assert main(["train", f"runs_dir={tmp_path}"] + TINY + ["train.steps=2"]) == 0
    before = {p: (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns) for p in run.rglob("*")}
    capsys.readouterr()
    assert main(["train", str(run)]) == 0
    out = capsys.readouterr().out
    assert "is finished" in out and "train.steps=" in out
    after = {p: (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns) for p in run.rglob("*")}
    assert after == before


# -- disk faults ---------------------------------------------------------------------------


def fail_writes(monkeypatch, err, where, after=0):
    """Opening a file for writing whose path contains `where` raises OSError(err), after `after`
    such opens succeeded. safetensors writes from Rust, so its save_file is wrapped too."""
    real_open = io.open
    seen = {"n": 0}

    def check(file, mode):
        if any(c in mode for c in "wax+") and where in str(file):
            seen["n"] += 1
            if seen["n"] > after:
                raise OSError(err, os.strerror(err), str(file))

    def fake_open(file, mode="r", *args, **kwargs):
        check(file, mode)
        return real_open(file, mode, *args, **kwargs)

    real_save = checkpoint.save_file

    def fake_save(tensors, filename, *args, **kwargs):
        check(filename, "wb")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(checkpoint, "save_file", fake_save)


@pytest.mark.parametrize(
    "err,where,after",
    [
        (errno.ENOSPC, ".tmp-step-00000004/__0_0.distcp", 0),  # a DCP shard of the second checkpoint
        (errno.EDQUOT, "extra-r0.safetensors", 1),  # the second checkpoint's RNG state
        (errno.EROFS, "extra-r0.json", 1),
        (errno.EACCES, "metrics.jsonl", 3),  # the fourth record
        (errno.ENOSPC, "config.", 0),  # the very first write of the run (config.yaml, through config.tmp)
        (errno.EROFS, "samples", 0),  # the sample at the end
    ],
)
def test_disk_fault_is_one_line_and_the_run_resumes(err, where, after, tmp_path, monkeypatch, capsys, reference):
    run = tmp_path / "t"
    with monkeypatch.context() as m:
        fail_writes(m, err, where, after)
        code = main(["train", f"runs_dir={tmp_path}"] + TINY)
    line = one_line(capsys, code, EXIT_FAILED, errno.errorcode[err], where.split("/")[-1])
    assert "runs_dir=" in line or "permissions" in line
    if (run / "metrics.jsonl").exists():  # what is there reads as one run
        assert steps(run) == list(range(1, len(steps(run)) + 1))
    latest = checkpoint.latest(run / "checkpoints")
    if where.startswith(".tmp-step-00000004") or where.startswith("extra"):
        assert latest.name == "step-00000002"  # the previous checkpoint is the latest, intact
    # Fault gone: the same command resumes and ends exactly where the uninterrupted run did.
    assert main(["train", f"runs_dir={tmp_path}"] + TINY) == 0
    assert steps(run) == list(range(1, 7)) and losses(run) == losses(reference)
