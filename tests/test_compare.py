"""zoo compare: budgets (seconds, tokens, FLOPs) -> steps -> train -> evaluate; run identity and
reuse, seeds, lr sweeps chosen on validation, frontier fits, tables and plots."""

import csv
import math
import statistics
import subprocess
import sys

import numpy as np
import pytest

from zoo_core.compare import (
    Budget,
    aggregate,
    fit_saturating_power_law,
    frontier,
    load_spec,
    parse_budget,
    parse_budget_any,
    plan,
    power_law,
)
from zoo_core.errors import UserError
from zoo_core.registry import get_registry

SPEC = """
name: t
budget: {budget}
runs_dir: {runs}
seeds: 2
lr: {lr}
select: val_accuracy
test_split: test
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


def test_budget_units():
    assert parse_budget("90s") == 90 and parse_budget("2m") == 120 and parse_budget("1.5h") == 5400
    assert parse_budget(30) == 30
    with pytest.raises(UserError, match="90s, 2m or 1.5h"):
        parse_budget("two hours")
    assert parse_budget_any("2M tokens") == Budget(2e6, "tokens")
    assert parse_budget_any("3e12 FLOPs") == Budget(3e12, "flops") == parse_budget_any("3T flops")
    assert parse_budget_any("45s") == Budget(45, "seconds") and parse_budget_any("2m").amount == 120
    with pytest.raises(UserError, match="tokens"):
        parse_budget_any("2M")  # mega what?
    assert Budget(2e6, "tokens").label == "2M tokens" and Budget(3e12, "flops").label == "3T FLOPs"


def test_unknown_spec_key_suggests(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("budget: 1s\narchitecture: {a: {}}\n")
    with pytest.raises(UserError, match="did you mean 'architectures'"):
        load_spec(str(p))


def test_power_law_recovers_exponent():
    rows = [{"compute_flops": c, "val_bpb": 3.0 * c**-0.1} for c in (1e9, 1e10, 1e11)]
    fit = power_law(rows)
    assert abs(fit["b"] - 0.1) < 1e-9 and abs(fit["a"] - 3.0) < 1e-6


def test_saturating_fit_recovers_known_parameters():
    """L = E + A C^-alpha from synthetic losses: exact without noise; with noise, within a few
    standard errors, and the standard errors are about the scatter of repeated fits."""
    C = np.geomspace(1e12, 1e17, 8)
    E, A, alpha = 1.3, 2.0e3, 0.27
    exact = fit_saturating_power_law(C, E + A * C**-alpha)
    assert abs(exact["E"] - E) < 1e-6 and abs(exact["alpha"] - alpha) < 1e-6 and abs(exact["A"] / A - 1) < 1e-5
    rng = np.random.default_rng(0)
    fits = [fit_saturating_power_law(C, E + A * C**-alpha + rng.normal(0, 0.01, C.size)) for _ in range(40)]
    for key, truth in (("E", E), ("alpha", alpha)):
        values = [f[key] for f in fits]
        errs = [f[f"{key}_err"] for f in fits]
        assert abs(statistics.fmean(values) - truth) < 3 * statistics.stdev(values) / math.sqrt(len(values)) + 0.02
        assert 0.4 < statistics.median(errs) / statistics.stdev(values) < 2.5  # honest error bars
        inside = sum(abs(f[key] - truth) < 2 * f[f"{key}_err"] for f in fits)
        assert inside >= 0.75 * len(fits)
    assert fit_saturating_power_law(C[:3], (E + A * C**-alpha)[:3]) is None  # 3 parameters need 4 points


def test_frontier_keeps_the_best_loss_at_each_compute():
    pts = [(1, 5.0), (2, 4.0), (2, 4.5), (3, 4.2), (4, 3.0), (8, 3.1)]
    assert frontier(pts) == [(1, 5.0), (2, 4.0), (4, 3.0)]


def _row(lr, seed, val, test, size="xs"):
    return {
        "task": "",
        "arch": "a",
        "size": size,
        "budget": "1k tokens",
        "budget_unit": "tokens",
        "lr": lr,
        "seed": seed,
        "params": 10,
        "params_non_embedding": 5,
        "state_bytes": 8,
        "train_flops_per_token": 1.0,
        "steps": 4,
        "tokens": 1000,
        "compute_flops": 1000.0,
        "tokens_per_s": 1.0,
        "val_loss": val,
        "val_bpb": val,
        "val_accuracy": 1 - val,
        "test_loss": test,
        "test_accuracy": 1 - test,
        "device": "cpu",
    }


def test_seeds_are_aggregated_and_the_lr_is_chosen_on_validation_never_test():
    # lr 1e-3: val 0.30/0.34 (mean 0.32), test 0.10; lr 3e-3: val 0.20/0.22 (mean 0.21), test 0.50.
    rows = [_row(1e-3, 0, 0.30, 0.10), _row(1e-3, 1, 0.34, 0.10), _row(3e-3, 0, 0.20, 0.50), _row(3e-3, 1, 0.22, 0.50)]
    for select in ("val_loss", "val_accuracy"):
        sweep, best = aggregate(rows, select)
        assert len(sweep) == 2 and len(best) == 1
        b = best[0]
        assert b["lr"] == 3e-3 and b["seeds"] == 2  # test would have picked 1e-3
        assert b["val_loss"] == pytest.approx(0.21) and b["val_loss_std"] == pytest.approx(
            statistics.stdev([0.20, 0.22])
        )
        assert [s["best"] for s in sweep] == [False, True]  # the sweep is kept, the choice marked


def _plan(tmp_path, **fmt):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(SPEC.format(runs=tmp_path / "runs", budget="64 tokens", lr="[1e-3, 3e-3]"))
    return load_spec(str(spec_file))


def test_run_identity_changes_with_budget_seed_and_lr(tmp_path):
    reg = get_registry()
    spec = _plan(tmp_path)
    runs = plan(spec, reg)
    assert len(runs) == 4 and len({r.identity for r in runs}) == 4  # 2 lrs x 2 seeds
    assert [r.identity for r in plan(spec, reg)] == [r.identity for r in runs]  # deterministic
    spec.budgets = [parse_budget_any("128 tokens")]
    assert not {r.identity for r in plan(spec, reg)} & {r.identity for r in runs}
    spec.budgets = [parse_budget_any("64 tokens")]
    spec.base = spec.base + ["optim.weight_decay=0.0"]  # anything that changes the result
    assert not {r.identity for r in plan(spec, reg)} & {r.identity for r in runs}
    spec.base = spec.base[:-1] + ["train.progress=false", "train.log_every=3"]  # display only
    assert [r.identity for r in plan(spec, reg)] == [r.identity for r in runs]


def test_compare_end_to_end_reuses_only_identical_runs(tmp_path, capsys):
    from zoo_core.compare import run_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(runs=tmp_path / "runs", budget="64 tokens", lr="3e-3"))
    cmd = [sys.executable, "-m", "zoo_core.cli", "compare", str(spec), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "reused" not in r.stdout
    out = tmp_path / "runs"
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs) == 2 and {row["seed"] for row in runs} == {"0", "1"} and {row["lr"] for row in runs} == {"0.003"}
    for row in runs:
        assert int(row["steps"]) == 2 and int(row["tokens"]) == 64  # 64 tokens / (2 x 16) per step
        assert float(row["compute_flops"]) == pytest.approx(64 * float(row["train_flops_per_token"]))
        assert 0 <= float(row["test_accuracy"]) <= 1 and float(row["state_bytes"]) > 0
    assert runs[0]["val_loss"] != runs[1]["val_loss"]  # the seeds differ
    best = list(csv.DictReader((out / "results.csv").open()))
    assert len(best) == 1 and best[0]["seeds"] == "2"
    assert float(best[0]["val_loss"]) == pytest.approx(statistics.fmean(float(c["val_loss"]) for c in runs))
    assert float(best[0]["val_loss_std"]) == pytest.approx(statistics.stdev(float(c["val_loss"]) for c in runs))
    md = (out / "results.md").read_text()
    assert "64 tokens" in md and "training tokens" in md and "test machine" in md and " ± " in md
    assert (out / "accuracy_vs_state.png").stat().st_size > 0 and (out / "bpb_vs_compute.png").stat().st_size > 0

    # A changed budget trains anew (the old runs stay); the same spec again reuses both, untouched.
    s = load_spec(str(spec))
    s.budgets = [parse_budget_any("96 tokens")]
    rows = run_spec(s, get_registry(), progress=False)
    assert "reused" not in capsys.readouterr().out and all(row["steps"] == 3 for row in rows)
    dirs = [p for p in out.iterdir() if (p / "compare.json").exists()]
    assert len(dirs) == 4
    metrics = {p: (p / "metrics.jsonl").read_text() for p in dirs}
    run_spec(load_spec(str(spec)), get_registry(), progress=False)
    said = capsys.readouterr().out
    assert "reused 2 of 2 finished runs" in said and said.count("reused") == 1
    assert all((p / "metrics.jsonl").read_text() == m for p, m in metrics.items())


def test_tasks_cross_the_cells_and_may_limit_sizes(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(
        "budget: 1k tokens\narchitectures: {attention: {}, hawk: {model.mixer.name: hawk, lr: [1e-3, 2e-3]}}\n"
        "sizes: {s: {model.dim: 16}, m: {model.dim: 32}}\n"
        "tasks: {a: {data.seq_len: 32}, b: {data.seq_len: 64, sizes: [m]}}\n"
    )
    spec = load_spec(str(p))
    runs = plan(spec, get_registry())
    cells = [(r.task, r.arch, r.size, r.lr) for r in runs]
    assert cells == [
        ("a", "attention", "s", None),
        ("a", "attention", "m", None),
        ("a", "hawk", "s", 1e-3),
        ("a", "hawk", "s", 2e-3),
        ("a", "hawk", "m", 1e-3),
        ("a", "hawk", "m", 2e-3),
        ("b", "attention", "m", None),
        ("b", "hawk", "m", 1e-3),
        ("b", "hawk", "m", 2e-3),
    ]
    assert runs[0].name.startswith("a-attention-s-") and len({r.identity for r in runs}) == len(runs)
    p.write_text(p.read_text().replace("sizes: [m]", "sizes: [xl]"))
    with pytest.raises(UserError, match="tasks.b.sizes"):
        load_spec(str(p))


def test_report_only_trains_nothing_and_names_what_is_missing(tmp_path, capsys):
    from zoo_core.compare import run_spec

    spec = _plan(tmp_path)
    with pytest.raises(UserError, match="no finished runs"):
        run_spec(spec, get_registry(), progress=False, report_only=True)
    assert "4 of 4 runs not finished" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_flop_and_second_budgets_become_steps(tmp_path):
    """FLOPs: steps = budget / (3 x declared forward FLOPs per token x tokens per step);
    seconds: steps = measured tokens/s x seconds / tokens per step, the measurement kept."""
    import json

    from zoo_core.compare import Run, _steps, _train_flops_per_token
    from zoo_core.config import load_config, resolve

    reg = get_registry()
    cfg = resolve(
        load_config(None, ["model.dim=16", "model.n_layers=1", "data.seq_len=16", "train.global_batch=2"]), reg
    )
    per_token = _train_flops_per_token(cfg, reg)
    assert per_token > 0
    flops = Run("", "a", "s", Budget(10 * per_token * 32, "flops"), None, 0, [])
    assert _steps(flops, cfg, reg, tmp_path / "f", 1) == (10, {})
    secs = Run("", "a", "s", Budget(2.0, "seconds"), None, 0, [])
    steps, tp = _steps(secs, cfg, reg, tmp_path / "s", 1)
    assert steps == max(1, int(tp["tokens_per_s"] * 2.0 / 32))
    assert json.loads((tmp_path / "s" / "throughput.json").read_text()) == tp  # a resumed run keeps its steps


def test_a_run_stopped_by_a_signal_is_not_recorded_as_finished(tmp_path, monkeypatch):
    import zoo_core.train
    from zoo_core.compare import Interrupted, finished, run_one

    spec = _plan(tmp_path)
    run = plan(spec, get_registry())[0]
    monkeypatch.setattr(zoo_core.train, "train", lambda *a, **k: {"step": 1, "interrupted": True})
    with pytest.raises(Interrupted, match="run the same command again"):
        run_one(spec, run, get_registry(), progress=False)
    assert finished(spec, run) is None and not (tmp_path / "runs" / run.name / "compare.json").exists()
