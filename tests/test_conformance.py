"""The conformance kit catches what it promises to catch, and `zoo check` reports it."""

import types
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from zoo_core import hookimpl
from zoo_core.cli import main
from zoo_core.registry import Registry
from zoo_core.testing import check_data_source, check_loss, check_mixer
from zoo_core.testing.build import ProbeConfig, ProbeMixer
from zoo_core.testing.sequence import CHECKS

FAST = dict(skip=["fsdp"])  # fsdp has its own test below


def failed(report):
    return {r.check: r.reason for r in report.failures}


def test_a_correct_mixer_passes_every_check():
    report = check_mixer(ProbeMixer, ProbeConfig())
    assert report.ok, str(report)
    assert {r.status for r in report.results} == {"pass"} and len(report.results) == len(CHECKS)


class Leaky(ProbeMixer):
    """Mixes in the next token: not causal, and step cannot match forward."""

    def forward(self, x, state=None, return_state=False):
        y, s = super().forward(x, state, return_state)
        return y + torch.roll(x, -1, dims=1), s


class DiffersCompiled(ProbeMixer):
    """Takes another path under torch.compile (as a fast path with a bug would)."""

    def forward(self, x, state=None, return_state=False):
        y, s = super().forward(x, state, return_state)
        return (y * 1.01 if torch.compiler.is_compiling() else y), s


class BreaksGraph(ProbeMixer):
    def forward(self, x, state=None, return_state=False):
        torch._dynamo.graph_break()
        return super().forward(x, state, return_state)


class WrongStep(ProbeMixer):
    def step(self, x, state):
        y, h = super().step(x, state)
        return y * 1.01, h


class BadState(ProbeMixer):
    """Keeps its state time-first and drops the carried state in forward."""

    def forward(self, x, state=None, return_state=False):
        y, h = super().forward(x, None, return_state)
        return y, (h[None] if return_state else None)


class DeadParam(ProbeMixer):
    def __init__(self, dim, config=None):
        super().__init__(dim, config)
        self.unused = nn.Linear(dim, dim)


class InitInConstructor(ProbeMixer):
    """Fills a buffer in __init__ only: garbage after the core's meta-device build."""

    def __init__(self, dim, config=None):
        super().__init__(dim, config)
        self.register_buffer("scale", torch.full((dim,), float("nan")).fill_(1.0))

    def reset_parameters(self):
        super().reset_parameters()
        self.scale.fill_(float("nan"))  # simulates to_empty leaving it uninitialised

    def forward(self, x, state=None, return_state=False):
        return super().forward(x, state, return_state)


class Upcasts(ProbeMixer):
    def forward(self, x, state=None, return_state=False):
        y, s = super().forward(x, state, return_state)
        return y.float(), s


class NoAccounting(ProbeMixer):
    def flops_per_token(self, seq_len):
        return 0.0

    def state_size(self, seq_len):
        return 10**6


@dataclass
class DtypeConfig:
    decay: float = 0.9
    dtype: Any = torch.float32  # not a YAML value: a run's config.yaml could not hold it


@pytest.mark.parametrize(
    "cls, check, reason",
    [
        (Leaky, "causality", "changed outputs before it"),
        (WrongStep, "step = forward", "step-by-step decoding"),
        (BadState, "state carry", "two segments"),
        (BadState, "state batch-first", "batch-first"),
        (DeadParam, "gradients", "unused.weight"),
        (InitInConstructor, "meta-init", "reset_parameters"),
        (Upcasts, "shape+dtype bf16", "output dtype torch.float32"),
        (NoAccounting, "flops/state accounting", "must be positive"),
        (DiffersCompiled, "compile", "torch.compile changes the output"),
    ],
)
def test_broken_mixers_fail_the_right_check_with_a_reason(cls, check, reason):
    report = check_mixer(cls, ProbeConfig(), **FAST)
    assert check in failed(report), str(report)
    assert reason in failed(report)[check]


def test_compile_check_reports_graph_breaks_without_failing():
    report = check_mixer(BreaksGraph, ProbeConfig(), **FAST)
    assert report.ok, str(report)
    assert "1 graph break" in next(r.reason for r in report.results if r.check == "compile")


def test_state_size_must_match_the_state_forward_returns():
    class Understated(ProbeMixer):
        def state_size(self, seq_len):
            return 4  # the state really holds dim * 4 bytes

    assert "forward's state holds" in failed(check_mixer(Understated, ProbeConfig(), **FAST))["flops/state accounting"]


def test_yaml_round_trip_catches_a_config_that_does_not_read_back():
    report = check_mixer(lambda d, c: ProbeMixer(d, ProbeConfig(c.decay)), DtypeConfig(), **FAST)
    assert "yaml round-trip" in failed(report)


def test_fsdp_check_wraps_with_fully_shard_and_tears_the_group_down():
    report = check_mixer(ProbeMixer, ProbeConfig(), skip=["bf16"])
    fsdp = [r for r in report.results if r.check == "fsdp"][0]
    assert fsdp.status == "pass" and "fully_shard" in fsdp.reason
    assert not torch.distributed.is_initialized()  # the rest of the process is not distributed


class NotAHead(nn.Module):
    def __init__(self, dim, vocab, embedding, config):
        super().__init__()
        self.proj = nn.Linear(dim, vocab)

    def forward(self, h, targets):
        return self.proj(h).logsumexp(-1).mean()

    def logits(self, h):
        return self.proj(h)


def test_loss_kit_requires_head_output():
    report = check_loss(NotAHead)
    assert "must return HeadOutput" in failed(report)["output (tied)"]


class ForgetfulSource:
    """Ignores load_state_dict: a resumed run would see different data."""

    bytes_per_token = 1.0

    def __init__(self, config, *, seq_len, n_streams, **_):
        self.T, self.n = seq_len, 0

    def batch(self, stream_ids):
        self.n += 1
        x = torch.arange(len(stream_ids) * (self.T + 1)).view(len(stream_ids), -1) % 7 + self.n
        return x[:, :-1], x[:, 1:]

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        pass


def test_data_kit_catches_a_source_that_does_not_resume():
    assert "does not resume" in failed(check_data_source(ForgetfulSource))["resume"]


def test_fixture_runs_the_kit_and_fails_with_the_table(zoo_conformance):
    assert zoo_conformance.mixer(ProbeMixer, ProbeConfig(), skip=["fsdp"]).ok
    with pytest.raises(AssertionError, match="causality"):
        zoo_conformance.mixer(Leaky, ProbeConfig(), skip=["fsdp"])


# -- zoo check --------------------------------------------------------------------


@pytest.fixture
def registry_with(monkeypatch):
    """Install plugin modules into a fresh registry that the CLI will use."""

    def install(**mixers):
        mod = types.ModuleType("testplug")
        mod.zoo_api = 1

        @hookimpl
        def register_mixers(register):
            for name, cls in mixers.items():
                register(name, cls, ProbeConfig, "a test mixer")

        mod.register_mixers = register_mixers
        reg = Registry()
        reg.add_plugin(mod, "testplug", "zoo-testplug", "0.1")
        reg.collect()
        monkeypatch.setattr("zoo_core.registry._REGISTRY", reg)
        return reg

    return install


def test_zoo_check_exit_codes_and_table(registry_with, capsys):
    registry_with(good=ProbeMixer, leaky=Leaky)
    assert main(["check", "good", "--skip", "fsdp"]) == 0
    out = capsys.readouterr().out
    assert "mixer good" in out and "causality" in out and f"{len(CHECKS) - 1} passed, 0 failed, 1 skipped" in out
    assert main(["check", "zoo-testplug", "--skip", "fsdp"]) == 1  # a distribution: both mixers
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "changed outputs before it" in captured.out
    assert "mixer leaky: causality" in captured.err
    assert main(["check", "testplug", "--quiet", "--skip", "fsdp"]) == 1  # the entry-point name
    assert main(["check", "good", "decay=0.5", "--quiet", "--skip", "fsdp"]) == 0


def test_zoo_check_unknown_name_or_option_is_one_line_exit_2(registry_with, capsys):
    registry_with(good=ProbeMixer)
    assert main(["check", "goood"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'good'" in err
    assert main(["check", "good", "decayy=0.5"]) == 2
    assert "unknown option 'decayy'" in capsys.readouterr().err
