"""Checkpoint mechanics in one process: atomic layout, keep-K, NaN stop, state regrouping, messages.
(The 2-rank kill -9, interrupted-save and reshard tests are in test_distributed.py.)"""

import json
import sys
import types

import pytest
import torch
from torch import nn

from zoo_core import checkpoint
from zoo_core.distributed import World
from zoo_core.errors import UserError
from zoo_core.train import _regroup, main


def test_saves_are_renamed_into_place_and_only_the_last_k_kept(tmp_path):
    model = nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    for step in (1, 2, 3):
        checkpoint.save(
            tmp_path, step, model, opt, World(), {"step": step}, {"x": torch.ones(2)}, keep=2, meta={"seq_len": 8}
        )
    assert [p.name for p in checkpoint.step_dirs(tmp_path)] == ["step-00000002", "step-00000003"]
    assert not list(tmp_path.glob(".tmp-*"))
    meta = checkpoint.read_meta(checkpoint.latest(tmp_path))
    assert meta == {"step": 3, "world_size": 1, "seq_len": 8}
    # Saving the same step again swaps it in; the weights are the new ones.
    with torch.no_grad():
        model.weight.fill_(0.5)
    checkpoint.save(tmp_path, 3, model, opt, World(), {"step": 3}, {}, keep=2)
    fresh = nn.Linear(4, 3)
    checkpoint.load_model(checkpoint.latest(tmp_path), fresh)
    assert torch.equal(fresh.weight, model.weight)
    assert [p.name for p in checkpoint.step_dirs(tmp_path)] == ["step-00000002", "step-00000003"]


def test_a_failed_save_leaves_the_previous_checkpoint_latest(tmp_path, monkeypatch):
    model = nn.Linear(4, 3)
    checkpoint.save(tmp_path, 1, model, None, World(), {}, {})

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", fail)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, 2, model, None, World(), {}, {})
    assert checkpoint.latest(tmp_path).name == "step-00000001"
    assert (tmp_path / ".tmp-step-00000002").is_dir()
    checkpoint.clean_partial(tmp_path)
    assert not (tmp_path / ".tmp-step-00000002").exists()


def test_read_meta_of_a_stranger_directory_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="not a zoo checkpoint"):
        checkpoint.read_meta(tmp_path)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, tiny_overrides, monkeypatch, capsys):
    from zoo_core.losses import CrossEntropyHead

    real = CrossEntropyHead.forward
    calls = []

    def poisoned(self, h, targets):
        out = real(self, h, targets)
        calls.append(1)
        if len(calls) >= 5:  # the fifth optimizer step (one micro-batch each)
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(CrossEntropyHead, "forward", poisoned)
    code = main(tiny_overrides + ["train.ckpt_every=2", "train.steps=8"])
    err = capsys.readouterr().err
    assert code == 1
    assert "loss is nan at step 5" in err and "step-00000004" in err
    assert checkpoint.latest(tmp_path / "t" / "checkpoints").name == "step-00000004"
    steps = [json.loads(line)["step"] for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 4


def test_carried_states_regroup_when_micro_batch_changes():
    # Two micro-batches of streams [0, 1] and [2, 3] -> four of one stream each, rows kept.
    saved = [
        [torch.tensor([[0.0], [1.0]]), {"h": torch.tensor([[10.0], [11.0]])}],
        [torch.tensor([[2.0], [3.0]]), {"h": torch.tensor([[12.0], [13.0]])}],
    ]
    out = _regroup(saved, [[0, 1], [2, 3]], [[0], [1], [2], [3]])
    assert [float(o[0]) for o in out] == [0.0, 1.0, 2.0, 3.0]
    assert [float(o[1]["h"]) for o in out] == [10.0, 11.0, 12.0, 13.0]
    with pytest.raises(UserError, match="streams \\[4\\]"):
        _regroup(saved, [[0, 1], [2, 3]], [[4]])


@pytest.mark.parametrize("flag, module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_missing_logging_extra_says_how_to_install_it(tmp_path, monkeypatch, flag, module):
    from zoo_core.metrics import MetricsLog

    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    cfg = types.SimpleNamespace(
        name="t", train=types.SimpleNamespace(tensorboard=flag == "tensorboard", wandb=flag == "wandb")
    )
    with pytest.raises(UserError, match=rf"train.{flag}=true needs .*zoo-core\[logging\]"):
        MetricsLog(tmp_path, cfg, enabled=True)


def test_export_of_a_directory_without_a_run_is_one_line(tmp_path, capsys):
    from zoo_core.cli import main as zoo

    assert zoo(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: ") and "not a run directory" in err and "\n" not in err
