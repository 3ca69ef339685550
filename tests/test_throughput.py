"""zoo throughput: measured step, FLOPs from the mixers' own counts, CSV output."""

import csv
import subprocess
import sys

from zoo_core.config import load_config, resolve
from zoo_core.model import build_model
from zoo_core.registry import get_registry
from zoo_core.throughput import measure, sweep

TINY = ["model.dim=32", "model.n_layers=2", "data.seq_len=16"]


def test_measure_counts_training_flops_from_the_model():
    reg = get_registry()
    cfg = resolve(load_config(None, TINY), reg)
    result = measure(cfg, reg, micro_batch=2, warmup=1, repeats=2)
    model = build_model(cfg, reg, 264)
    assert result.flops_per_token == 3 * model.flops_per_token(16)
    assert result.tokens_per_s > 0 and result.params == model.num_params()
    assert result.mfu > 0  # against the CPU's measured GEMM peak (tests/test_cpu_peak.py)


def test_reset_runs_are_timed_with_document_starts(monkeypatch):
    """A compare time budget for a data.documents=reset row counts the steps a reset run takes:
    the timed step passes resets (a start every DOCUMENT_TOKENS tokens); a stream row never does."""
    from zoo_core import throughput
    from zoo_core.loop.model import LanguageModel

    seen, real = [], LanguageModel.forward

    def spy(self, tokens, targets, *args, **kwargs):
        seen.append(kwargs.get("resets"))
        return real(self, tokens, targets, *args, **kwargs)

    monkeypatch.setattr(LanguageModel, "forward", spy)
    monkeypatch.setattr(throughput, "DOCUMENT_TOKENS", 8)
    reg = get_registry()
    for documents in ("stream", "reset"):
        cfg = resolve(load_config(None, [*TINY, "model.mixer.name=hawk", f"data.documents={documents}"]), reg)
        measure(cfg, reg, micro_batch=2, warmup=0, repeats=1)
    stream, reset = seen
    assert stream is None
    assert reset.shape == (2, 16) and reset[:, [0, 8]].all() and reset.sum() == 4


def test_sweep_doubles_until_the_limit():
    reg = get_registry()
    cfg = resolve(load_config(None, TINY), reg)
    results = sweep(cfg, reg, start=1, limit=4, warmup=0, repeats=1)
    assert [r.micro_batch for r in results] == [1, 2, 4]


def test_cli_writes_csv(tmp_path):
    out = tmp_path / "tp.csv"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo_core.cli",
            "throughput",
            *TINY,
            "--micro-batch",
            "2",
            "--warmup",
            "1",
            "--repeats",
            "1",
            "--csv",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["mixers"] == "attention" and float(rows[0]["tokens_per_s"]) > 0
    assert float(rows[0]["mfu"]) > 0 and "%" in r.stdout  # MFU on CPU, not "-"
