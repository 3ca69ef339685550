"""Trackers with the real packages: TensorBoard's event files read back with its own reader,
wandb in offline mode (its run files on disk), and a tracker that raises is dropped with one
line while the run goes on with the others (issue #25)."""

import json
import sys
import time
import types

import pytest

from zoo_core import hookimpl
from zoo_core.interfaces import Tracker
from zoo_core.trackers import tag
from zoo_core.train import train


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_tags_are_hierarchical():
    assert [tag(k) for k in ("loss", "lr", "tokens_per_s", "val_bpb", "val_loss", "mtp/head1")] == [
        "train/loss",
        "train/lr",
        "train/tokens_per_s",
        "val/bpb",
        "val/loss",
        "mtp/head1",
    ]


def test_tensorboard_events_hold_train_and_val_tags_at_their_steps(tmp_path, tiny_overrides):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'zoo-core[logging]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(None, tiny_overrides + ["train.tensorboard=true", "train.eval_every=3", "train.sample_tokens=0"])
    acc = EventAccumulator(str(tmp_path / "t" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "val/bpb", "val/loss"} <= tags, tags
    assert not {"time", "elapsed_s", "train/time", "train/elapsed_s"} & tags  # the clock stays in metrics.jsonl
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in acc.Scalars("val/bpb")] == [3, 6]
    logged = [r["loss"] for r in records(tmp_path / "t") if "loss" in r]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(logged, rel=1e-6)


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install 'zoo-core[logging]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))  # nothing written outside the test
    monkeypatch.delenv("WANDB_DIR", raising=False)
    return wandb


def _offline_runs(run):
    return sorted(p for p in (run / "wandb").glob("offline-run-*") if p.is_dir())


def _logged(run_dir, keys):
    """Which of `keys` wandb wrote to its run file (run-ID.wandb), and the steps of its history
    rows where wandb still ships a Python reader for that file (before 0.2x; current wandb reads
    it in its Go core only, so then the keys are found as the record file's bytes)."""
    (path,) = run_dir.glob("run-*.wandb")
    try:
        from wandb.proto import wandb_internal_pb2
        from wandb.sdk.internal import datastore
    except ImportError:
        # wandb's core process writes the file on its own: finish() may return before the last
        # records are on disk (seen under load), so wait for them a while.
        deadline = time.monotonic() + 60
        while True:
            data = path.read_bytes()
            found = {k for k in keys if k.encode() in data}
            if found >= {k for k in keys if k.startswith(("train/loss", "val/"))} or time.monotonic() > deadline:
                return found, None
            time.sleep(0.5)
    ds = datastore.DataStore()
    ds.open_for_scan(str(path))
    found, steps = set(), set()
    while (data := ds.scan_data()) is not None:
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                found.add(key)
                if key == "_step":
                    steps.add(int(json.loads(item.value_json)))
    return found & set(keys), steps


def test_wandb_offline_run_holds_the_logged_keys_and_a_resume_keeps_its_id(tmp_path, tiny_overrides, wandb_offline):
    run = tmp_path / "t"
    train(None, tiny_overrides + ["train.wandb=true", "train.steps=4", "train.ckpt_every=2", "train.sample_tokens=0"])
    run_id = (run / "wandb-id.txt").read_text().strip()
    assert len(run_id) == 8 and run_id.isalnum()
    (first,) = _offline_runs(run)
    assert first.name.endswith(run_id)
    wanted = {"train/loss", "train/lr", "train/tokens_per_s", "val/bpb"}
    keys, steps = _logged(first, wanted | {"train/time", "train/elapsed_s"})
    assert keys == wanted  # the clock stays in metrics.jsonl
    assert steps in (None, {1, 2, 3, 4})

    train(str(run), ["train.steps=6"])  # the resumed zoo run continues the same wandb run
    assert (run / "wandb-id.txt").read_text().strip() == run_id
    runs = _offline_runs(run)
    assert len(runs) == 2 and all(p.name.endswith(run_id) for p in runs)
    later = next(p for p in runs if p != first)
    keys, steps = _logged(later, wanted)
    assert keys == wanted and steps in (None, {5, 6})


# -- a tracker that raises --------------------------------------------------------------------

SEEN: list[int] = []


class Broken(Tracker):
    @classmethod
    def wanted(cls, cfg):
        return True

    def __init__(self, run_dir, cfg, step):
        raise ConnectionError("no route to host\n(retried 3 times)")

    def log(self, numbers, step):
        raise AssertionError("never started")


class Flaky(Tracker):
    @classmethod
    def wanted(cls, cfg):
        return True

    def __init__(self, run_dir, cfg, step):
        self.calls = 0

    def log(self, numbers, step):
        self.calls += 1
        if self.calls == 2:
            raise OSError("disk quota exceeded")


class Good(Tracker):
    @classmethod
    def wanted(cls, cfg):
        return True

    def __init__(self, run_dir, cfg, step):
        SEEN.clear()

    def log(self, numbers, step):
        SEEN.append(step)


def test_a_tracker_that_raises_is_one_warning_and_the_run_goes_on(tmp_path, tiny_overrides, monkeypatch, capsys):
    from zoo_core import registry

    mod = types.ModuleType("zoo_test_trackers")
    mod.zoo_api = 1

    @hookimpl
    def register_trackers(register):
        register("broken", Broken, None, "raises when it starts")
        register("flaky", Flaky, None, "raises at its second record")
        register("good", Good, None, "records the steps")

    mod.register_trackers = register_trackers
    monkeypatch.setitem(sys.modules, "zoo_test_trackers", mod)
    reg = registry.build_registry((*registry.DEFAULT_PLUGINS, "zoo_test_trackers"))
    monkeypatch.setattr("zoo_core.registry._REGISTRY", reg)

    out = train(None, tiny_overrides + ["train.sample_tokens=0"])
    err = capsys.readouterr().err
    assert out["step"] == 6
    warned = [line for line in err.splitlines() if line.startswith("zoo: warning: tracker")]
    assert warned == [
        "zoo: warning: tracker broken stopped: ConnectionError: no route to host (retried 3 times)",
        "zoo: warning: tracker flaky stopped: OSError: disk quota exceeded",
    ]
    assert "Traceback" not in err
    assert SEEN == [1, 2, 3, 4, 5, 6, 6]  # every train record and the final validation's
    assert [r["step"] for r in records(tmp_path / "t") if "loss" in r] == [1, 2, 3, 4, 5, 6]
