"""MFU on CPU: a measured GEMM peak, cached; `zoo throughput` and the training log report MFU against it."""

import json

import pytest
import torch

from zoo_core import cpu_peak, cpu_tune


@pytest.fixture
def tune_file(tmp_path, monkeypatch):
    path = tmp_path / "cpu-tune.json"
    monkeypatch.setenv("ZOO_CPU_TUNE", str(path))
    cpu_tune.forget()
    yield path
    cpu_tune.forget()


def test_calibration_measures_a_positive_peak_per_dtype(tune_file, monkeypatch):
    monkeypatch.setattr(cpu_peak, "N", 128)  # tiny: only that it runs and counts 2 N^3 FLOPs per call
    for dtype in (torch.float32, torch.bfloat16):
        entry = cpu_peak.calibrate(dtype)
        assert entry["flops"] > 1e6 and entry["route"] in ("aten", "onednn") and 32 <= entry["n"] <= 128
    assert cpu_peak.calibrate(torch.bfloat16)["route"] == "aten"


def test_peak_is_cached_once_per_dtype(tune_file, monkeypatch):
    calls = []
    monkeypatch.setattr(
        cpu_peak, "calibrate", lambda dtype: calls.append(dtype) or {"flops": 5e10 if dtype == torch.float32 else 2e10}
    )
    assert cpu_peak.gemm_peak(torch.float32) == 5e10
    assert cpu_peak.gemm_peak(torch.float32) == 5e10
    assert cpu_peak.gemm_peak(torch.bfloat16) == 2e10
    assert calls == [torch.float32, torch.bfloat16]
    cpu_tune.forget()
    monkeypatch.setattr(cpu_peak, "calibrate", lambda dtype: pytest.fail("calibrated again despite the cache"))
    assert cpu_peak.gemm_peak(torch.bfloat16) == 2e10
    (entries,) = json.loads(tune_file.read_text())["entries"].values()
    assert set(entries) == {"gemm-float32", "gemm-bfloat16"}


def test_throughput_reports_mfu_against_the_measured_peak(tune_file, monkeypatch):
    from zoo_core.config import load_config, resolve
    from zoo_core.registry import get_registry
    from zoo_core.throughput import measure

    monkeypatch.setattr(cpu_peak, "calibrate", lambda dtype: {"flops": 1e9 if dtype == torch.float32 else 1e8})
    reg = get_registry()
    for extra, peak in (([], 1e9), (["parallel.mixed_precision=bf16"], 1e8)):
        cfg = resolve(load_config(None, ["model.dim=32", "model.n_layers=2", "data.seq_len=16", *extra]), reg)
        r = measure(cfg, reg, micro_batch=2, warmup=0, repeats=1)
        assert r.mfu == pytest.approx(r.flops_per_token * r.tokens_per_s / peak)


def test_training_log_has_mfu(tiny_run):
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r and "step" in r and "val_loss" not in r]
    assert steps and all(0 < r["mfu"] < 1.5 for r in steps)


def test_a_peak_below_what_the_run_measures_leaves_mfu_out_with_one_warning(
    tune_file, monkeypatch, tmp_path, tiny_overrides
):
    """A peak calibrated on a busy machine can be far too low; MFU above 100% is then reported as nothing."""
    from zoo_core.train import train

    monkeypatch.setattr(cpu_peak, "calibrate", lambda dtype: {"flops": 1.0})  # 1 FLOP/s: any run exceeds it
    with pytest.warns(UserWarning, match="MFU left out") as caught:
        train(None, tiny_overrides + ["train.log_every=1"])
    assert len([w for w in caught if "MFU left out" in str(w.message)]) == 1
    records = [json.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if "loss" in r] and not [r for r in records if "mfu" in r]
