"""Through the core: registered, conformant, and `zoo train` learns with both mixers."""

import json

import pytest

from zoo_core.errors import UserError
from zoo_core.testing import check_registered
from zoo_core.train import train

MIXERS = {
    "mamba2": ["model.mixer.headdim=16", "model.mixer.d_state=16", "model.mixer.chunk_size=16"],
    "mamba": ["model.mixer.d_state=8"],
}


def overrides(tmp_path, name, *extra):
    return [
        f"runs_dir={tmp_path}",
        "name=t",
        f"model.mixer.name={name}",
        *MIXERS[name],
        "model.dim=32",
        "model.n_layers=2",
        "data.seq_len=32",
        "train.global_batch=4",
        "train.steps=36",
        "optim.lr=1e-2",
        "optim.warmup_steps=4",
        "train.eval_every=0",
        "train.eval_batches=1",
        "train.eval_batch_size=2",
        "train.log_every=1",
        "train.sample_tokens=0",
        "train.progress=false",
        *extra,
    ]


def losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("name", MIXERS)
def test_loss_drops_on_shakespeare(tmp_path, name):
    train(None, overrides(tmp_path, name))
    loss = losses(tmp_path / "t")
    assert len(loss) == 36
    first, last = sum(loss[:3]) / 3, sum(loss[-3:]) / 3
    assert last < first - 1.0, (first, last)


@pytest.mark.parametrize("name", MIXERS)
def test_carry_state_trains(tmp_path, name):
    train(None, overrides(tmp_path, name, "train.steps=6", "train.carry_state=true"))
    loss = losses(tmp_path / "t")
    assert len(loss) == 6 and loss[-1] < loss[0]


@pytest.mark.parametrize(
    "name,options", [("mamba2", {"headdim": 8, "d_state": 8, "chunk_size": 4}), ("mamba", {"d_state": 4})]
)
def test_conformance_kit(name, options):
    check_registered("mixers", name, options).raise_for_failures()


def test_unknown_option_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="d_stat"):
        train(None, overrides(tmp_path, "mamba2", "model.mixer.d_stat=4"))
