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
    return [
        f"runs_dir={tmp_path}",
        "name=t",
        "model.dim=32",
        "model.n_layers=2",
        "data.seq_len=32",
        "train.global_batch=4",
        "train.steps=6",
        "train.eval_every=0",
        "train.eval_batches=2",
        "train.eval_batch_size=4",
        "train.log_every=1",
        "train.sample_tokens=8",
        "train.progress=false",
        "optim.warmup_steps=2",
    ]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, request):
    """A tiny model trained for 3 steps, once per test module; returns its run directory.

    A module may set TINY_RUN_EXTRA (a list of overrides) to change the run.
    """
    from zoo_core.train import train

    root = tmp_path_factory.mktemp("runs")
    os.environ.setdefault("ZOO_CACHE", str(tmp_path_factory.getbasetemp().parent / "zoo-cache"))
    train(
        None,
        [
            f"runs_dir={root}",
            "name=t",
            "model.dim=32",
            "model.n_layers=2",
            "data.seq_len=32",
            "train.global_batch=4",
            "train.steps=3",
            "train.eval_every=0",
            "train.eval_batches=1",
            "train.eval_batch_size=4",
            "train.sample_tokens=0",
            "train.progress=false",
            "optim.warmup_steps=1",
            "train.threads=1",
            *getattr(request.module, "TINY_RUN_EXTRA", []),
        ],
    )
    return root / "t"
