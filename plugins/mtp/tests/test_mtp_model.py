"""The mtp head in the whole model and the one training loop, over every installed mixer."""

import json

import pytest
import torch

from zoo_core.registry import get_registry
from zoo_core.testing.build import rel_err
from zoo_core.train import train

VOCAB = 64


# Every installed mixer with the independent form; the block form (mixer-independent) once.
CASES = [(m, "independent") for m in get_registry().names("mixers")] + [("attention", "block")]


@pytest.mark.parametrize("mixer, form", CASES)
def test_sequential_backward_gives_the_one_graph_gradients(mixer, form, build_lm):
    model = build_lm(mixer, [f"model.loss.form={form}", "model.loss.n_heads=3", "model.loss.weights=[1,0.5,0.5]"])
    model.train()
    g = torch.Generator().manual_seed(3)
    inputs = torch.randint(0, VOCAB, (2, 12), generator=g)
    targets = torch.randint(0, VOCAB, (2, 12), generator=g)
    targets[1, 5] = -100
    scale = 1.0 / 23  # n_tokens x world / global_count, as the loop passes it

    out, _ = model(inputs, targets)  # one graph: every head's logits alive at once
    assert out.trunk_grad is None
    (out.loss * out.n_tokens * scale).backward()
    one_graph = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    seq, _ = model(inputs, targets, backward_scale=out.n_tokens * scale)  # what Trainer.train_step does
    h, dh = seq.trunk_grad
    h.backward(dh)
    assert abs(float(seq.loss) - float(out.loss)) < 1e-6
    for name, p in model.named_parameters():
        assert rel_err(p.grad, one_graph[name]) < 1e-6, name


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_logs_each_head_and_evaluates_head_1(tmp_path):
    base = [
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
        "train.sample_tokens=4",
        "train.progress=false",
        "optim.warmup_steps=1",
        "model.loss.name=mtp",
        "model.loss.n_heads=3",
    ]
    seq = train(None, base + ["name=seq"])
    plain = train(None, base + ["name=plain", "model.loss.sequential_backward=false"])
    logged = [r for r in _records(tmp_path / "seq") if "loss" in r]
    assert all(f"loss_head{k}" in logged[-1] for k in (1, 2, 3))
    # The objective is the sum of the heads' losses (weights 1), each over its own targets' count.
    first = logged[0]
    assert first["loss"] > first["loss_head1"] + first["loss_head2"]
    # The memory trick changes nothing but memory: same losses step by step.
    plain_losses = [r["loss"] for r in _records(tmp_path / "plain") if "loss" in r]
    assert [round(r["loss"], 4) for r in logged] == [round(x, 4) for x in plain_losses]
    # Validation is head 1's next-token loss: well below the summed training objective.
    assert seq["val"]["loss"] < logged[-1]["loss"] and seq["val"]["bpb"] > 0
    assert abs(seq["val"]["loss"] - plain["val"]["loss"]) < 1e-4
