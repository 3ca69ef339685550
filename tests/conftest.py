import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The core's tests use tiny shapes, where a second thread only adds synchronisation
    # (measured ~10x more CPU on 2 cores); torchrun children pick their own.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Prepared shards are shared across tests (preparing Shakespeare takes a few seconds).
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path_factory.getbasetemp().parent / "zoo-cache"))


@pytest.fixture
def tiny_overrides(tmp_path):
    """A model and schedule small enough for a test to train in seconds."""
    return [f"runs_dir={tmp_path}", "name=t", "model.dim=32", "model.n_layers=2", "data.seq_len=32",
            "train.global_batch=4", "train.steps=6", "train.eval_every=0", "train.eval_batches=2",
            "train.eval_batch_size=4", "train.log_every=1", "train.sample_tokens=8", "train.progress=false",
            "optim.warmup_steps=2"]
