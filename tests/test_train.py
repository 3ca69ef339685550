"""The single-process loop: it learns, logs, checkpoints, resumes and samples."""

import json

from zoo_core.train import train


def records(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_writes_the_run_directory(tmp_path, tiny_overrides):
    out = train(None, tiny_overrides + ["train.eval_every=3", "train.ckpt_every=3"])
    run = tmp_path / "t"
    assert (run / "config.yaml").exists() and (run / "samples").is_dir()
    steps = [r for r in records(run) if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    for key in ("loss", "grad_norm", "lr", "tokens_per_s", "tokens_seen", "peak_mem_mb"):
        assert key in steps[-1]
    assert out["val"]["bpb"] > 0 and out["sample"].startswith("ROMEO:")
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step-00000003", "step-00000006"]
    # The resolved config holds every plugin option.
    assert "head_dim" in (run / "config.yaml").read_text()


def test_loss_drops_on_shakespeare(tmp_path, tiny_overrides):
    train(None, tiny_overrides + ["train.steps=40", "optim.lr=1e-2", "train.eval_every=0"])
    losses = [r["loss"] for r in records(tmp_path / "t") if "loss" in r]
    assert losses[-1] < losses[0] - 1.0


def test_rerun_resumes_and_extends(tmp_path, tiny_overrides):
    train(None, tiny_overrides + ["train.steps=4"])
    out = train(str(tmp_path / "t"), ["train.steps=6"])
    steps = [r["step"] for r in records(tmp_path / "t") if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6] and out["step"] == 6


def test_compiled_training_matches_eager(tmp_path, tiny_overrides):
    """parallel.compile=true (torch.compile per block, inductor) trains the same model to the same losses."""
    from torch._dynamo.utils import counters

    short = ["train.steps=3", "train.sample_tokens=0"]
    train(None, tiny_overrides + short + ["name=eager"])
    graphs = counters["stats"]["unique_graphs"]
    train(None, tiny_overrides + short + ["name=compiled", "parallel.compile=true"])
    assert counters["stats"]["unique_graphs"] > graphs, "nothing was compiled"
    eager, compiled = ([r["loss"] for r in records(tmp_path / n) if "loss" in r] for n in ("eager", "compiled"))
    assert len(eager) == len(compiled) == 3
    for a, b in zip(eager, compiled):
        assert abs(a - b) < 1e-4 * abs(a), (eager, compiled)
