"""The sequential per-head backward under FSDP2: 2 gloo ranks train exactly as 1 process."""

import json
import os
import subprocess
import sys

import pytest
import torch.distributed as dist

from zoo_core.train import train


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_two_ranks_match_one_process(tmp_path):
    overrides = [
        f"runs_dir={tmp_path}",
        "model.dim=32",
        "model.n_layers=2",
        "data.seq_len=32",
        "train.global_batch=4",
        "train.steps=3",
        "train.eval_every=0",
        "train.eval_batches=1",
        "train.eval_batch_size=4",
        "train.log_every=1",
        "train.sample_tokens=0",
        "train.progress=false",
        "train.threads=1",
        "optim.warmup_steps=1",
        "model.loss.name=mtp",
        "model.loss.n_heads=3",
        "model.loss.form=block",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "zoo_core.train",
        *overrides,
        "name=two",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    train(None, overrides + ["name=one"])

    def losses(name):
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [(round(r["loss"], 4), round(r["loss_head3"], 4)) for r in rows if "loss" in r]

    assert losses("two") == losses("one") and len(losses("one")) == 3
