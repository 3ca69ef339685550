"""`make demo` a second time: the finished run is left as it is and its result read back, no
traceback (the first version read a key only a fresh run returns)."""

from __future__ import annotations

from zoo_core.demo import train_demo

TINY = ["model.dim=16", "model.n_layers=1", "data.seq_len=16", "train.global_batch=2", "train.steps=2"]
TINY += ["train.eval_every=1", "train.eval_batches=1", "train.sample_tokens=0"]


def test_demo_again_reads_the_finished_run_back(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    first = train_demo(TINY, 0.0)
    assert first is not None and first > 0
    second = train_demo(TINY, 0.0)
    out = capsys.readouterr().out
    assert second == first
    assert "was trained before (2 steps)" in out and f"{first:.3f}" in out and "remove" in out
