"""`zoo new-plugin`: every kind renders; a scaffold installs, passes its own tests,
and a new mixer written into it trains and generates through the ordinary CLI."""

import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from zoo_core.cli import main
from zoo_core.commands.new_plugin import KINDS, render

PREFIX = "ci"  # scaffolded names: ci_mixer, ci_block, ci_loss, ci_data


def test_every_kind_renders_complete_python(tmp_path):
    for kind in KINDS:
        files = render(f"my_{kind}", kind, tmp_path / kind)
        names = {str(f.relative_to(tmp_path / kind)) for f in files}
        assert {"pyproject.toml", "README.md", f"zoo_my_{kind}/__init__.py", f"tests/test_my_{kind}.py"} <= names
        for f in files:
            text = f.read_text()
            assert "${" not in text, f"unfilled placeholder in {f}"
            if f.suffix == ".py":
                compile(text, str(f), "exec")
        assert f'my_{kind} = "zoo_my_{kind}"' in (tmp_path / kind / "pyproject.toml").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["new-plugin", "My-Mixer"], "must be lowercase letters, digits and _"),
        (["new-plugin", "attention"], "already registered by zoo-attention"),
        (["new-plugin", "fresh", "--kind", "mixr"], "--kind mixr is not one of mixer, block, loss, data"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_refuses_to_overwrite_a_directory(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["new-plugin", "fresh", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


# -- the end-to-end test ------------------------------------------------------------------

NEW_MIXER = '''
"""A causal EMA whose decay depends on the input: a_t = sigmoid(W_a x_t + b),
h_t = a_t h_{t-1} + (1 - a_t) W_in x_t, y_t = W_out h_t."""
from dataclasses import dataclass

import torch
from torch import nn

from zoo_core.interfaces import Mixer


@dataclass
class SelectiveEmaConfig:
    #: Decay-gate bias at init: sigmoid(2) ~ 0.88, a slow decay.
    bias_init: float = 2.0


class SelectiveEma(Mixer):
    def __init__(self, dim, config):
        super().__init__(dim, config)
        self.w_decay = nn.Linear(dim, dim)
        self.w_in = nn.Linear(dim, dim, bias=False)
        self.w_out = nn.Linear(dim, dim, bias=False)

    def reset_parameters(self):
        for m in (self.w_decay, self.w_in, self.w_out):
            m.reset_parameters()
        with torch.no_grad():
            self.w_decay.bias.fill_(self.config.bias_init)

    def _update(self, x, h):
        a = torch.sigmoid(self.w_decay(x))
        return a * h + (1 - a) * self.w_in(x)

    def forward(self, x, state=None, return_state=False):
        h = self.init_state(x.shape[0], x.device, x.dtype) if state is None else state
        ys = []
        for t in range(x.shape[1]):
            h = self._update(x[:, t], h)
            ys.append(h)
        return self.w_out(torch.stack(ys, 1)), (h if return_state else None)

    def step(self, x, state):
        h = self._update(x, state)
        return self.w_out(h), h

    def init_state(self, batch_size, device=None, dtype=None):
        w = self.w_in.weight
        return torch.zeros(batch_size, self.dim, device=device or w.device, dtype=dtype or w.dtype)

    def flops_per_token(self, seq_len):
        return 6.0 * self.dim * self.dim + 8.0 * self.dim

    def state_size(self, seq_len):
        return self.dim * self.w_in.weight.element_size()
'''

NEW_INIT = """
from zoo_core import hookimpl

from zoo_ci_mixer.mixer import CiMixerConfig, CiMixerMixer
from zoo_ci_mixer.selective import SelectiveEma, SelectiveEmaConfig

zoo_api = 1


@hookimpl
def register_mixers(register):
    register("ci_mixer", CiMixerMixer, CiMixerConfig, "the scaffold's EMA")
    register("ci_selective", SelectiveEma, SelectiveEmaConfig, "EMA with an input-dependent decay")
"""


def overlay_venv(root: Path) -> Path:
    """A venv that sees this one's packages but installs into itself, so the test's
    plugin never appears to anything else using the shared environment."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = next(root.glob("lib/python*/site-packages"))
    parent = sysconfig.get_paths()["purelib"]
    (site / "_zoo_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return root / "bin" / "python"


def test_scaffold_install_test_check_train_generate_uninstall(tmp_path):
    py = overlay_venv(tmp_path / "venv")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def run(*args, cwd=tmp_path, ok=True):
        proc = subprocess.run([str(py), *args], cwd=cwd, env=env, capture_output=True, text=True)
        if ok:
            assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    zoo = ("-m", "zoo_core.cli")
    pkgs = {}
    for kind in KINDS:  # 1. scaffold one package of every kind
        out = tmp_path / f"zoo-{PREFIX}-{kind}"
        run(*zoo, "new-plugin", f"{PREFIX}_{kind}", "--kind", kind, "--out", str(out))
        pkgs[kind] = out
    installed = False
    try:
        # 3. pip install (editable, no network), then each package passes its own tests as generated.
        run(
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            *[x for p in pkgs.values() for x in ("-e", str(p))],
        )
        installed = True
        tests = run(
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            *[str(p / "tests") for p in pkgs.values()],
        )
        assert " passed" in tests.stdout and "failed" not in tests.stdout
        # 2. implement a new mixer in the mixer package (editable: live at once).
        pkg = pkgs["mixer"] / "zoo_ci_mixer"
        (pkg / "selective.py").write_text(textwrap.dedent(NEW_MIXER))
        (pkg / "__init__.py").write_text(textwrap.dedent(NEW_INIT))
        # 4. zoo plugins lists it.
        listing = run(*zoo, "plugins").stdout
        assert "zoo-ci-mixer" in listing and "ci_selective" in listing and "ci_block" in listing
        # The kit, through the CLI, on the new mixer.
        check = run(*zoo, "check", "ci_selective")
        assert "0 failed" in check.stdout
        # 5. train 20 steps with the new mixer, the scaffolded block and loss.
        runs = tmp_path / "runs"
        run(
            *zoo,
            "train",
            f"runs_dir={runs}",
            "name=e2e",
            "model.mixer.name=ci_selective",
            "model.block.name=ci_block",
            "model.loss.name=ci_loss",
            "model.dim=32",
            "model.n_layers=2",
            "data.seq_len=32",
            "train.global_batch=4",
            "train.steps=20",
            "train.eval_every=0",
            "train.eval_batches=2",
            "train.eval_batch_size=4",
            "train.sample_tokens=8",
            "train.progress=false",
            "train.log_every=5",
        )
        config = (runs / "e2e" / "config.yaml").read_text()
        assert "ci_selective" in config and "bias_init" in config and "z_loss" in config
        # 6. generate a few tokens from the run.
        gen = run(*zoo, "generate", str(runs / "e2e"), "--prompt", "ROMEO:", "--max-tokens", "8")
        assert gen.stdout.startswith("ROMEO:") and len(gen.stdout.rstrip("\n")) > len("ROMEO:")
    finally:
        # 7. uninstall.
        if installed:
            run("-m", "pip", "uninstall", "-y", "-q", *[f"zoo-{PREFIX}-{k}" for k in KINDS])
    assert "ci_selective" not in run(*zoo, "plugins").stdout
