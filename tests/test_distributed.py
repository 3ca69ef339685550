"""The training loop under torchrun: 2 gloo ranks on the CPU.

Promises tested (issue 3): world-size and accumulation invariance with and
without carried recurrent state; exact resume after kill -9; a save killed
half-way leaves the previous checkpoint resumable; a 2-rank checkpoint loads in
1 process (eval, generate, export) and in 2 ranks (resume); one rank's SIGUSR1
stops every rank at the same step with a checkpoint.

The stateful mixer is a tiny causal EMA defined here and registered through a
test-only distribution on PYTHONPATH, so torchrun's children find it too.
Runs are shared between tests (module fixtures) to keep the 2-rank launches few.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import zoo_core.registry
from zoo_core import checkpoint
from zoo_core.errors import UserError
from zoo_core.train import train

PLUGIN = '''
"""Test-only zoo plugin: a causal EMA with learned per-channel decay (a stateful mixer)."""
import os
import signal
from dataclasses import dataclass

import torch
from torch import nn

from zoo_core import hookimpl
from zoo_core.interfaces import Mixer

zoo_api = 1


@dataclass
class EmaConfig:
    max_decay: float = 0.95


class Ema(Mixer):
    """h_t = a * h_{t-1} + (1 - a) * W_in x_t,  y_t = W_out h_t,  a = sigmoid(decay_logit)."""

    def __init__(self, dim, config):
        super().__init__(dim, config)
        self.w_in = nn.Linear(dim, dim, bias=False)
        self.w_out = nn.Linear(dim, dim, bias=False)
        self.decay_logit = nn.Parameter(torch.empty(dim))

    def reset_parameters(self):
        self.w_in.reset_parameters()
        self.w_out.reset_parameters()
        with torch.no_grad():
            a = torch.linspace(0.5, self.config.max_decay, self.dim, device=self.decay_logit.device)
            self.decay_logit.copy_(torch.log(a / (1 - a)))

    def forward(self, x, state=None, return_state=False):
        a = torch.sigmoid(self.decay_logit)
        u = self.w_in(x)
        h = torch.zeros_like(u[:, 0]) if state is None else state.to(u.dtype)
        ys = []
        for t in range(x.shape[1]):
            h = a * h + (1 - a) * u[:, t]
            ys.append(h)
        return self.w_out(torch.stack(ys, 1)), (h if return_state else None)

    def init_state(self, batch_size, device=None, dtype=None):
        w = self.w_out.weight
        return torch.zeros(batch_size, self.dim, device=device or w.device, dtype=dtype or w.dtype)

    def flops_per_token(self, seq_len):
        return 4.0 * self.dim * self.dim + 3.0 * self.dim

    def state_size(self, seq_len):
        return 4 * self.dim


@hookimpl
def register_mixers(register):
    register("ema_test", Ema, EmaConfig, "test-only causal EMA")


# Fault injection for the interrupted-save test: rank 1 is killed (SIGKILL)
# right after writing its part of checkpoint step N, before the rename.
if os.environ.get("ZOO_TEST_KILL_IN_SAVE"):
    import zoo_core.checkpoint as _ckpt
    _save_file = _ckpt.save_file
    _target = ".tmp-step-%08d" % int(os.environ["ZOO_TEST_KILL_IN_SAVE"])

    def _save_then_die(tensors, filename, *args, **kwargs):
        _save_file(tensors, filename, *args, **kwargs)
        if _target in str(filename) and os.environ.get("RANK") == "1":
            os.kill(os.getpid(), signal.SIGKILL)

    _ckpt.save_file = _save_then_die
'''

PLUGINS = "attention,ema_test"  # only these: other plugins in the checkout stay out of these tests
COMMON = [
    "model.dim=32",
    "model.n_layers=2",
    "data.seq_len=32",
    "train.global_batch=4",
    "train.log_every=1",
    "train.progress=false",
    "train.eval_every=0",
    "train.eval_batches=2",
    "train.eval_batch_size=4",
    "optim.warmup_steps=2",
    "train.deterministic=true",
    "train.sample_tokens=0",
    "train.threads=1",
]
# Attention, replicated (no_shard) with every other block checkpointed; samples at the end on both ranks.
ATTN = [
    "model.mixer.name=attention",
    "model.mixer.head_dim=16",
    "parallel.fsdp=no_shard",
    "parallel.activation_checkpointing=selective",
    "train.steps=5",
    "train.ckpt_every=3",
    "train.sample_tokens=4",
]
# The EMA mixer with state carried across steps, fully sharded, every block checkpointed.
EMA = [
    "model.mixer.name=ema_test",
    "train.carry_state=true",
    "parallel.fsdp=full_shard",
    "parallel.activation_checkpointing=full",
    "train.steps=10",
    "train.ckpt_every=2",
]


# -- helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ema_plugin")
    info = d / "zoo_ematest-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-ematest\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[zoo]\nema_test = zoo_ematest\n")
    (d / "zoo_ematest.py").write_text(PLUGIN)
    return d


@pytest.fixture(scope="module")
def env(plugin_dir, tmp_path_factory):
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(plugin_dir)] + [p for p in [e.get("PYTHONPATH")] if p])
    e["ZOO_CACHE"] = str(tmp_path_factory.getbasetemp().parent / "zoo-cache")  # as conftest.py
    e["ZOO_DISABLE_PLUGIN_AUTOLOAD"], e["ZOO_PLUGINS"] = "1", PLUGINS
    e["OMP_NUM_THREADS"] = "1"
    e.pop("ZOO_TEST_KILL_IN_SAVE", None)
    return e


@pytest.fixture
def in_process(plugin_dir, monkeypatch):
    """The same plugin set in this process, for the 1-rank side of a comparison."""
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("ZOO_PLUGINS", PLUGINS)
    zoo_core.registry.get_registry(refresh=True)
    yield
    zoo_core.registry._REGISTRY = None  # rebuilt lazily, without the test plugin


def torchrun(args, nproc=2):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "zoo_core.train",
        *args,
    ]


def zoo(*args):
    return [sys.executable, "-m", "zoo_core.cli", *args]


def run_ok(cmd, env, timeout=300):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def records(run_dir):
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses(run_dir):
    return [r["loss"] for r in records(run_dir) if "loss" in r]


def last_step(run_dir):
    return max([r["step"] for r in records(run_dir) if "loss" in r], default=0)


def assert_close(a, b, rel=1e-5):
    assert len(a) == len(b) and len(a) > 0
    for i, (x, y) in enumerate(zip(a, b)):
        assert abs(x - y) <= rel * abs(y), f"step {i + 1}: {x} vs {y} (relative {abs(x - y) / abs(y):.2e})"


@pytest.fixture(scope="module")
def attn_run(env, tmp_path_factory):
    root = tmp_path_factory.mktemp("attn")
    run_ok(torchrun([f"runs_dir={root}", "name=a"] + COMMON + ATTN), env)
    return root / "a"


@pytest.fixture(scope="module")
def ema_run(env, tmp_path_factory):
    """The uninterrupted 2-rank reference with carried state."""
    root = tmp_path_factory.mktemp("ema")
    run_ok(torchrun([f"runs_dir={root}", "name=e"] + COMMON + EMA), env)
    return root / "e"


# -- invariance ------------------------------------------------------------------------


def test_two_ranks_equal_one_rank_with_accumulation(attn_run, in_process, tmp_path):
    # 2 ranks x micro 2 against 1 rank x micro 2 x 2 accumulation steps.
    train(None, [f"runs_dir={tmp_path}", "name=one"] + COMMON + ATTN + ["train.micro_batch=2"])
    assert losses(attn_run) == losses(tmp_path / "one")  # bitwise with no_shard (docs/guarantees.md)
    two = [r["grad_norm"] for r in records(attn_run) if "loss" in r]
    one = [r["grad_norm"] for r in records(tmp_path / "one") if "loss" in r]
    assert_close(two, one, rel=1e-4)
    val = [r["val_loss"] for r in records(attn_run) if "val_loss" in r]
    assert_close(val, [r["val_loss"] for r in records(tmp_path / "one") if "val_loss" in r])


def test_carried_state_is_world_size_invariant(ema_run, in_process, tmp_path):
    # 1 rank with micro_batch 1 (4 accumulation steps, one stream each) against 2 ranks x 2 streams.
    train(None, [f"runs_dir={tmp_path}", "name=one"] + COMMON + EMA + ["train.micro_batch=1"])
    assert_close(losses(ema_run), losses(tmp_path / "one"))


def test_carried_state_continues_the_stream(in_process, tmp_path):
    """With lr 0 the weights stay put, so step 2 with carried state must score the second
    window exactly as one forward over both windows scores its second half."""
    from zoo_core.components import build_source
    from zoo_core.runs import load_run

    train(None, [f"runs_dir={tmp_path}", "name=c"] + COMMON + EMA + ["train.steps=2", "optim.lr=0"])
    step2 = losses(tmp_path / "c")[1]
    run = load_run(tmp_path / "c", device="cpu")
    source = build_source(run.cfg, zoo_core.registry.get_registry(), run.tokenizer, "train", 4, progress=False)
    (x0, _, _), (x1, y1, _) = source.batch(range(4)), source.batch(range(4))  # the two windows the run trained on
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        logits, _ = run.model.logits(torch.cat([x0, x1], dim=1))  # one pass over both windows
        carried = ce(logits[:, x0.shape[1] :].flatten(0, 1), y1.flatten())
        fresh_logits, _ = run.model.logits(x1)  # the second window alone, from a zero state
        fresh = ce(fresh_logits.flatten(0, 1), y1.flatten())
    assert math.isclose(step2, float(carried), rel_tol=1e-5)
    assert not math.isclose(step2, float(fresh), rel_tol=1e-4)  # the state made a difference


# -- checkpoints -------------------------------------------------------------------------


def test_exact_resume_after_kill_9(ema_run, env, tmp_path):
    args = [f"runs_dir={tmp_path}", "name=k"] + COMMON + EMA
    run_dir = tmp_path / "k"
    proc = subprocess.Popen(
        torchrun(args), env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if checkpoint.latest(run_dir / "checkpoints") is not None and last_step(run_dir) >= 5:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, mid-step
    proc.wait()
    killed_at = last_step(run_dir)
    assert proc.returncode != 0 and 0 < killed_at < 10, f"not killed mid-run (step {killed_at})"
    run_ok(zoo("train", str(run_dir), "--nproc", "2"), env)
    assert losses(run_dir) == losses(ema_run)  # bitwise: floats compared exactly
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))


def test_save_killed_halfway_leaves_previous_checkpoint(ema_run, env, tmp_path):
    args = [f"runs_dir={tmp_path}", "name=s"] + COMMON + EMA
    run_dir = tmp_path / "s"
    crash = subprocess.run(torchrun(args), env={**env, "ZOO_TEST_KILL_IN_SAVE": "6"}, capture_output=True, timeout=300)
    assert crash.returncode != 0
    ckpts = run_dir / "checkpoints"
    assert checkpoint.latest(ckpts).name == "step-00000004"
    partial = ckpts / ".tmp-step-00000006"
    assert (partial / "extra-r1.safetensors").exists() and not (partial / "meta.json").exists()
    run_ok(zoo("train", str(run_dir), "--nproc", "2"), env)
    assert losses(run_dir) == losses(ema_run)
    assert not partial.exists()
    assert [p.name for p in checkpoint.step_dirs(ckpts)] == ["step-00000008", "step-00000010"]  # keep 2


def test_two_rank_checkpoint_loads_in_one_process(attn_run, in_process, tmp_path):
    from safetensors.torch import load_file

    from zoo_core.cli import main
    from zoo_core.components import build_source
    from zoo_core.distributed import World
    from zoo_core.evaluate import evaluate
    from zoo_core.runs import load_run

    assert checkpoint.read_meta(checkpoint.latest(attn_run / "checkpoints"))["world_size"] == 2
    # Evaluation in 1 process reproduces the 2-rank validation of the same weights.
    run = load_run(attn_run, device="cpu")
    t = run.cfg.train
    source = build_source(
        run.cfg, zoo_core.registry.get_registry(), run.tokenizer, "val", t.eval_batch_size, progress=False
    )
    val = evaluate(run.model, source, World(), t.eval_batches)
    logged = [r["val_loss"] for r in records(attn_run) if "val_loss" in r][-1]
    assert math.isclose(val["loss"], logged, rel_tol=1e-6)
    # Generation ran on both ranks in lockstep at the end (FSDP forward methods).
    assert (attn_run / "samples" / "step-00000005.txt").read_text().startswith("ROMEO:")
    # Export: one safetensors file with exactly the model's tensors, plus the config.
    assert main(["export", str(attn_run), "--out", str(tmp_path / "x")]) == 0
    exported = load_file(str(tmp_path / "x" / "model.safetensors"))
    expected = run.model.state_dict()
    assert sorted(exported) == sorted(expected)
    assert all(torch.equal(exported[k], expected[k]) for k in expected)
    assert (tmp_path / "x" / "config.yaml").read_text() == (attn_run / "config.yaml").read_text()


def test_resume_with_another_world_size_is_one_clear_error(attn_run, in_process):
    with pytest.raises(UserError, match="written by 2 ranks.*--nproc 2"):
        train(str(attn_run), ["train.steps=8"])


# -- preemption -------------------------------------------------------------------------


def test_sigusr1_on_one_rank_stops_both_with_a_checkpoint(env, tmp_path):
    """bf16 mixed precision and hybrid sharding ride along: the same stop, other code paths."""
    args = (
        [f"runs_dir={tmp_path}", "name=p"]
        + COMMON
        + [
            "model.mixer.name=ema_test",
            "train.steps=400",
            "train.ckpt_every=0",
            "parallel.fsdp=hybrid",
            "parallel.mixed_precision=bf16",
        ]
    )
    run_dir = tmp_path / "p"
    proc = subprocess.Popen(torchrun(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while last_step(run_dir) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    rank1 = _worker_with_rank(proc.pid, 1)
    assert rank1 is not None, "rank 1 not found"
    os.kill(rank1, signal.SIGUSR1)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    stopped = last_step(run_dir)
    assert f"stopped by signal at step {stopped}" in out and stopped < 400
    latest = checkpoint.latest(run_dir / "checkpoints")
    assert latest.name == f"step-{stopped:08d}"
    assert {p.name for p in latest.glob("extra-r*.json")} == {"extra-r0.json", "extra-r1.json"}
    assert all(math.isfinite(x) for x in losses(run_dir))


def _worker_with_rank(parent, rank):
    """The pid of the torchrun child whose RANK is `rank`."""
    for _ in range(200):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                environ = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent and f"RANK={rank}".encode() in environ:
                return int(entry.name)
        time.sleep(0.05)
    return None


# -- launching ------------------------------------------------------------------------------


def test_zoo_train_nproc_builds_the_torchrun_line():
    from argparse import Namespace

    from zoo_core.commands.train import torchrun_command

    one_node = torchrun_command(
        Namespace(nproc=8, nnodes=1, node_rank=None, rdzv_endpoint=None, rdzv_id="zoo"), "cfg.yaml", ["train.steps=5"]
    )
    assert one_node[1:] == [
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=8",
        "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        "--standalone",
        "-m",
        "zoo_core.train",
        "cfg.yaml",
        "train.steps=5",
    ]
    two_nodes = torchrun_command(
        Namespace(nproc=8, nnodes=2, node_rank=1, rdzv_endpoint="n0:29500", rdzv_id="j"), None, []
    )
    assert {"--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=n0:29500", "--rdzv-id=j", "--node-rank=1"} <= set(
        two_nodes
    )
    with pytest.raises(UserError, match="--rdzv-endpoint"):
        torchrun_command(Namespace(nproc=8, nnodes=2, node_rank=0, rdzv_endpoint=None, rdzv_id="zoo"), None, [])
