"""Logs for clusters (issue #25): off a terminal (a Slurm log, `> log.txt`) plain timestamped
lines every train.log_every steps and no carriage returns; on a terminal the progress bar;
a line per finished split for eval, per run for compare and for a local sweep; every
metrics.jsonl record carries `time` and `elapsed_s`."""

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from datetime import datetime, timezone

from zoo_core.loop import metrics
from zoo_core.loop.metrics import duration, step_line
from zoo_core.train import train

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
STEP_LINE = re.compile(
    rf"^{STAMP} step (\d+)/(\d+) loss \d+\.\d{{3}} lr \d\.\de[+-]\d\d tok/s [\d,]+( mfu \d+\.\d%)? "
    r"elapsed (\d+s|\d+m\d\ds|\d+h\d\dm) eta (\d+s|\d+m\d\ds|\d+h\d\dm)$"
)


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_step_line_and_durations():
    record = {"loss": 2.13449, "lr": 3e-3, "tokens_per_s": 12345.4, "mfu": 0.0812}
    line = step_line(120, 800, record, elapsed=72.2, eta=400)
    assert line == "step 120/800 loss 2.134 lr 3.0e-03 tok/s 12,345 mfu 8.1% elapsed 1m12s eta 6m40s"
    assert STEP_LINE.match("2026-12-06T17:50:01Z " + line)
    assert "mfu" not in step_line(1, 2, {"loss": 1.0, "lr": 1e-3, "tokens_per_s": 5.0}, 0.0, None)
    assert [duration(s) for s in (0, 59.6, 61, 3599, 3600, 7500)] == [
        "0s",
        "1m00s",
        "1m01s",
        "59m59s",
        "1h00m",
        "2h05m",
    ]


def _env(tmp_path_factory):
    env = dict(os.environ)
    env["ZOO_CACHE"] = str(tmp_path_factory.getbasetemp().parent / "zoo-cache")  # as conftest.py
    env["ZOO_DISABLE_PLUGIN_AUTOLOAD"], env["ZOO_PLUGINS"] = "1", "attention"
    env["OMP_NUM_THREADS"] = "1"
    env.pop("TERM", None)
    return env


def _argv(tmp_path, tiny_overrides):
    # train.progress=true: off a terminal the bar is left out whatever the setting.
    extra = ["train.steps=6", "train.log_every=2", "train.progress=true", "train.sample_tokens=0", "train.threads=1"]
    return [sys.executable, "-m", "zoo_core.cli", "train", *tiny_overrides, *extra]  # `zoo train`


def test_off_a_terminal_training_writes_timestamped_lines_and_no_carriage_returns(
    tmp_path, tiny_overrides, tmp_path_factory
):
    out, err = tmp_path / "log.txt", tmp_path / "err.txt"
    with out.open("w") as o, err.open("w") as e:  # as a Slurm job's output files
        p = subprocess.run(_argv(tmp_path, tiny_overrides), stdout=o, stderr=e, env=_env(tmp_path_factory))
    text, errors = out.read_text(), err.read_text()
    assert p.returncode == 0, errors[-3000:]
    assert "\r" not in text and "\r" not in errors
    lines = [line for line in text.splitlines() if STEP_LINE.match(line)]
    assert [int(STEP_LINE.match(line).group(1)) for line in lines] == [2, 4, 6], text
    assert all(int(STEP_LINE.match(line).group(2)) == 6 for line in lines)
    assert lines[-1].endswith("eta 0s")
    assert "val bits/byte" in text  # the end-of-run summary is still there


def test_on_a_terminal_training_draws_the_bar_and_writes_no_lines(tmp_path, tiny_overrides, tmp_path_factory):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    p = subprocess.Popen(_argv(tmp_path, tiny_overrides), stdout=slave, stderr=slave, env=_env(tmp_path_factory))
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=300) == 0
    text = b"".join(chunks).decode(errors="replace")
    # tqdm's bar, redrawn in place (a terminal shows a newline as \r\n: only a bare \r is the bar's)
    assert re.search(r"\r(?!\n)", text) and "6/6" in text, text
    assert not any(STEP_LINE.match(line.strip("\r")) for line in text.splitlines())


def test_every_record_carries_time_and_elapsed_and_a_resume_goes_on_from_the_checkpoint(tmp_path, tiny_overrides):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    run = tmp_path / "t"
    train(None, tiny_overrides + ["train.steps=4", "train.ckpt_every=2", "train.sample_tokens=0"])
    first = records(run)
    train(str(run), ["train.steps=6"])
    after = datetime.now(timezone.utc)
    both = records(run)
    assert both[: len(first)] == first  # what the first process wrote is kept as it was
    assert all(set(r) >= {"time", "elapsed_s"} for r in both)
    for r in both:
        assert re.fullmatch(STAMP, r["time"])
        t = datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert before <= t <= after
    elapsed = [r["elapsed_s"] for r in both]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    # The resumed process starts from the checkpoint's seconds, not from 0.
    step4 = max(r["elapsed_s"] for r in first if r["step"] == 4)
    assert min(r["elapsed_s"] for r in both if r["step"] == 5) >= step4


def test_eval_off_a_terminal_writes_a_line_per_split(tmp_path, tiny_overrides, capsys):
    from zoo_core.cli import main

    train(None, tiny_overrides + ["train.steps=2", "train.sample_tokens=0"])
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "t"), "--splits", "val,train", "--batches", "2"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if re.match(rf"^{STAMP} eval ", line)]
    assert len(lines) == 2, out
    assert re.match(
        rf"^{STAMP} eval 1/2 val: bpb \d+\.\d{{4}} loss \d+\.\d{{4}} \([\d,]+ tokens\) elapsed \S+$", lines[0]
    )
    assert " eval 2/2 train: " in lines[1]
    assert "\r" not in out
    assert main(["eval", str(tmp_path / "t"), "--splits", "val", "--batches", "1", "--quiet"]) == 0
    assert not re.search(rf"^{STAMP} eval ", capsys.readouterr().out, re.M)  # --quiet: no progress at all


COMPARE_SPEC = """
name: t
budget: 64 tokens
runs_dir: {runs}
seeds: 2
lr: 3e-3
select: val_loss
machine: test machine
base:
  data.source: {{name: mqar, vocab: 64, num_kv_pairs: 2}}
  data.seq_len: 16
  train.global_batch: 2
  train.eval_batches: 1
  train.eval_batch_size: 2
  train.sample_tokens: 0
  train.eval_every: 0
  optim.warmup_steps: 1
architectures:
  attention: {{model.mixer.name: attention, model.mixer.position: learned, model.mixer.max_positions: 16}}
sizes:
  xs: {{model.dim: 16, model.n_layers: 1, model.block.mlp: false}}
"""


def test_compare_off_a_terminal_writes_a_line_per_run(tmp_path, capsys):
    from zoo_core.compare import load_spec, run_spec
    from zoo_core.registry import get_registry

    spec = tmp_path / "spec.yaml"
    spec.write_text(COMPARE_SPEC.format(runs=tmp_path / "runs"))
    run_spec(load_spec(str(spec)), get_registry(), progress=True)
    out = capsys.readouterr().out
    assert "\r" not in out
    started = re.findall(rf"^{STAMP} compare t: run (\d)/2 \S+: 64 tokens, lr 0.003, seed \d$", out, re.M)
    finished = re.findall(
        rf"^{STAMP} compare t: finished (\d)/2 \S+ \(2 steps, val bpb \d+\.\d{{4}}\) elapsed \S+ eta \S+$", out, re.M
    )
    assert started == ["1", "2"] and finished == ["1", "2"], out
    run_spec(load_spec(str(spec)), get_registry(), progress=True)  # the same spec again: both reused
    assert len(re.findall(rf"^{STAMP} compare t: finished \d/2 \S+ \(reused, ", capsys.readouterr().out, re.M)) == 2


def _sweep_runs(tmp_path, names):
    from omegaconf import OmegaConf

    return [OmegaConf.create({"runs_dir": str(tmp_path / "runs"), "name": n}) for n in names]


def test_a_local_sweep_off_a_terminal_writes_started_finished_and_failed_lines(tmp_path, capsys):
    from zoo_core.commands.launch import sweep_locally

    runs = _sweep_runs(tmp_path, ["a", "b", "c"])
    assert sweep_locally(runs, lambda c: 0) == 0
    out = capsys.readouterr().out
    assert "\r" not in out
    started = re.findall(
        rf"^{STAMP} sweep run (\d) of 3: \S+ started \(started \1, finished (\d), failed 0 of 3\) ", out, re.M
    )
    finished = re.findall(
        rf"^{STAMP} sweep run (\d) of 3: \S+ finished \(started \1, finished \1, failed 0 of 3\) "
        rf"elapsed \S+ eta \S+$",
        out,
        re.M,
    )
    assert started == [("1", "0"), ("2", "1"), ("3", "2")] and finished == ["1", "2", "3"], out
    # The second run fails: its line says so with the status, and the third never starts.
    codes = iter([0, 3, 0])
    assert sweep_locally(runs, lambda c: next(codes)) == 3
    out = capsys.readouterr().out
    assert re.search(
        rf"^{STAMP} sweep run 2 of 3: \S+/b failed with exit status 3 \(started 2, finished 1, failed 1 of 3\) "
        r"elapsed \S+; the sweep stops here$",
        out,
        re.M,
    ), out
    assert "sweep run 3 of 3" not in out


def test_a_local_sweep_on_a_terminal_draws_a_bar_and_writes_no_lines(tmp_path, capsys, monkeypatch):
    from zoo_core.commands.launch import sweep_locally
    from zoo_core.loop import metrics

    monkeypatch.setattr(metrics, "on_terminal", lambda stream=None: True)
    assert sweep_locally(_sweep_runs(tmp_path, ["a", "b"]), lambda c: 0) == 0
    captured = capsys.readouterr()
    assert "sweep: 100%" in captured.err and "2/2" in captured.err, captured.err
    assert not re.search(rf"^{STAMP} ", captured.out, re.M)
    assert "sweep run 1 of 2" in captured.out + captured.err  # each run is still named, above the bar


def test_records_reads_a_key_back_and_passes_over_a_torn_last_line(tmp_path):
    lines = [{"step": 1, "loss": 2.0}, {"step": 1, "val_bpb": 3.0}, {"step": 2, "loss": 1.5}]
    text = "\n".join(json.dumps(r) for r in lines) + '\n{"step": 3, "loss": 1.'  # killed mid-write
    (tmp_path / "metrics.jsonl").write_text(text)
    assert metrics.records(tmp_path, "loss") == [lines[0], lines[2]]
    assert metrics.records(tmp_path, "val_bpb") == [lines[1]]
    assert metrics.records(tmp_path / "absent", "loss") == []
