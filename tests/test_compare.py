"""zoo compare: throughput -> steps for the budget -> train -> bits/byte; results, plots, fits, skipping."""
import csv
import json
import subprocess
import sys

import pytest

from zoo_core.compare import load_spec, parse_budget, power_law
from zoo_core.errors import UserError

SPEC = """
name: t
budget: 1s
runs_dir: {runs}
throughput_repeats: 1
base:
  data.seq_len: 16
  train.global_batch: 2
  train.eval_batches: 1
  train.eval_batch_size: 2
  train.sample_tokens: 0
  train.eval_every: 0
  optim.warmup_steps: 1
architectures:
  attention: {{model.mixer.name: attention}}
sizes:
  xs: {{model.dim: 16, model.n_layers: 1}}
  s: {{model.dim: 24, model.n_layers: 1}}
  m: {{model.dim: 32, model.n_layers: 1}}
"""


def test_budget_units():
    assert parse_budget("90s") == 90 and parse_budget("2m") == 120 and parse_budget("1.5h") == 5400
    assert parse_budget(30) == 30
    with pytest.raises(UserError, match="90s, 2m or 1.5h"):
        parse_budget("two hours")


def test_unknown_spec_key_suggests(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("budget: 1s\narchitecture: {a: {}}\n")
    with pytest.raises(UserError, match="did you mean 'architectures'"):
        load_spec(str(p))


def test_power_law_recovers_exponent():
    rows = [{"compute_flops": c, "val_bpb": 3.0 * c ** -0.1} for c in (1e9, 1e10, 1e11)]
    fit = power_law(rows)
    assert abs(fit["b"] - 0.1) < 1e-9 and abs(fit["a"] - 3.0) < 1e-6


def test_compare_end_to_end_and_skips_finished_runs(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(runs=tmp_path / "runs"))
    cmd = [sys.executable, "-m", "zoo_core.cli", "compare", str(spec), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [row["size"] for row in rows] == ["xs", "s", "m"]
    for row in rows:
        assert int(row["steps"]) >= 1 and float(row["val_bpb"]) > 0 and float(row["compute_flops"]) > 0
    assert int(rows[0]["params"]) < int(rows[2]["params"])
    for png in ("bpb_vs_compute.png", "bpb_vs_params.png", "loss_curves.png"):
        assert (out / png).stat().st_size > 0
    assert "Power-law fits" in (out / "results.md").read_text()
    metrics = (out / "attention-xs" / "metrics.jsonl").read_text()
    r2 = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r2.returncode == 0 and (out / "attention-xs" / "metrics.jsonl").read_text() == metrics
