"""The README's commands, run as written (issue #25), as docs tests do.

Every shell block of README.md (fenced ```bash / ```console / ```sh, or indented by four spaces,
when its lines are commands: `zoo`, `make`, `pip`, `torchrun`, `python` or `$ ...`) is split into
commands (`# comments` dropped, `\\` continuations joined) and each runs in one temporary
directory, shared by the block's commands in order, as a new user would type them. Inputs the
README presumes exist there: `my.yaml` (an empty config), `./my-corpus` and `data/code` (a few
text files), and the checkout's `plugins/` (for `plugins/hawk/configs/griffin.yaml`).

What the README itself says is optional is adjusted, and nothing else: every `zoo train` (and
`zoo launch`) gets
the small-model overrides below after its own (overrides go in any order, the last wins), and each
of them but a block's first that names no run trains under its own name, so that runs/default
stays the first one's (the README's later commands use it).

An HTML comment before a block skips, with its reason: `<!-- readme-test: skip block (REASON) -->`
the whole block, `<!-- readme-test: skip "COMMAND PREFIX" (REASON) -->` the commands that start
with the prefix. A skip without a reason, or one that matches nothing, fails the test.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from zoo_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md"]
COMMAND_WORDS = ("zoo", "make", "pip", "torchrun", "python", "$")
#: The small model and schedule every README `zoo train` gets after its own overrides.
TINY = [
    "model.dim=32",
    "model.n_layers=2",
    "data.seq_len=32",
    "train.global_batch=4",
    "train.steps=2",
    "train.eval_every=0",
    "train.eval_batches=1",
    "train.eval_batch_size=2",
    "train.sample_tokens=4",
    "train.log_every=1",
    "train.progress=false",
    "optim.warmup_steps=1",
]
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s+(block|\"[^\"]+\")\s*(?:\((.*?)\))?\s*-->")


def blocks(path: Path) -> list[dict]:
    """[{line, commands: [str], skips: {prefix or 'block': reason}}] for every shell block."""
    lines = path.read_text().splitlines()
    found, i, skips = [], 0, {}
    while i < len(lines):
        line = lines[i]
        m = SKIP.search(line)
        if m:
            skips[m.group(1).strip('"')] = (m.group(2) or "").strip()
            i += 1
            continue
        if line.startswith("```"):
            lang, body, start = line[3:].strip(), [], i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if lang in ("bash", "console", "sh", "shell"):
                found.append({"line": start, "text": body, "skips": skips})
            skips, i = {}, i + 1
            continue
        if line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            body, start = [], i + 1
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            first = body[0].split()[0] if body[0].split() else ""
            if first in COMMAND_WORDS:
                found.append({"line": start, "text": body, "skips": skips})
            skips = {}
            continue
        if line.strip():
            skips = {} if not line.startswith("<!--") else skips
        i += 1
    for b in found:
        b["commands"] = commands(b["text"])
    return found


def commands(text: list[str]) -> list[list[str]]:
    """The commands of a block, as argv lists: comments and shown output dropped, `\\` joined."""
    out, pending = [], ""
    console = any(t.startswith("$ ") for t in text)
    for raw in text:
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if console and not pending and not line.startswith("$ "):
            continue  # the output the README shows
        line = line[2:] if line.startswith("$ ") and not pending else line
        if line.endswith("\\"):
            pending += " " + line[:-1]
            continue
        out.append(shlex.split(pending + " " + line, comments=True))
        pending = ""
    return out


def shown(argv: list[str]) -> str:
    """A command as the skips and messages name it: its words, joined by spaces."""
    return " ".join(argv)


ALL = [(path, b) for path in DOCS for b in blocks(path)]


def test_the_readme_blocks_are_found_and_every_skip_has_a_reason_and_matches():
    assert len(ALL) >= 5
    for path, b in ALL:
        for prefix, reason in b["skips"].items():
            assert reason, f"{path.name}:{b['line']}: a skip needs its reason: skip {prefix} (REASON)"
            assert prefix == "block" or any(shown(c).startswith(prefix) for c in b["commands"]), (
                f'{path.name}:{b["line"]}: skip "{prefix}" matches no command of the block'
            )
    skipped = sum(len(b["commands"]) if "block" in b["skips"] else len(b["skips"]) for _, b in ALL)
    total = sum(len(b["commands"]) for _, b in ALL)
    assert skipped <= total // 2, f"{skipped} of {total} README commands are skipped: keep skips few"


def _inputs(tmp_path: Path) -> None:
    (tmp_path / "my.yaml").write_text("model: {}\n")
    text = (ROOT / "README.md").read_text()
    for folder in ("my-corpus", "data/code"):
        d = tmp_path / folder
        d.mkdir(parents=True)
        for i in range(3):
            (d / f"part{i}.txt").write_text(text[i * 4000 : (i + 1) * 4000] * 3)
    (tmp_path / "plugins").symlink_to(ROOT / "plugins")


def _argv(command: list[str], first_train: list[bool]) -> list[str]:
    argv = command[1:]
    if argv and argv[0] in ("train", "launch"):
        names_a_run = any(a.startswith("name=") for a in argv) or any(
            not a.startswith("-") and "=" not in a and Path(a).is_dir() for a in argv[1:]
        )
        if not names_a_run and not first_train[0]:
            argv.append(f"name=readme-{len(list(Path('runs').glob('*')))}")
        first_train[0] = False
        argv += TINY
    return argv


@pytest.mark.parametrize("path, block", ALL, ids=[f"{p.name}:{b['line']}" for p, b in ALL])
def test_readme_block_runs_as_written(path, block, tmp_path, monkeypatch, capsys):
    if "block" in block["skips"]:
        pytest.skip(block["skips"]["block"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZOO_KERNELS_QUIET", "1")
    _inputs(tmp_path)
    first_train = [True]
    ran = 0
    for argv in block["commands"]:
        command = shown(argv)
        if any(command.startswith(prefix) for prefix in block["skips"]):
            continue
        assert argv[0] == "zoo", f"{path.name}:{block['line']}: '{command}' is not a zoo command; skip it"
        expected = _expected_error(block, command)
        code = main(_argv(argv, first_train))
        captured = capsys.readouterr()
        if expected is not None:
            assert code == 2 and _matches(expected, captured.err.strip()), (command, captured.err)
        else:
            assert code == 0, f"{path.name}:{block['line']}: `{command}` exited {code}: {captured.err[-2000:]}"
        ran += 1
    assert ran, "every command of the block was skipped: skip the block instead"
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)


def _expected_error(block: dict, command: str) -> str | None:
    """A console block's shown output after `$ command`: the one line zoo answers."""
    text = block["text"]
    for i, line in enumerate(text):
        if line.startswith("$ ") and shown(shlex.split(line[2:], comments=True)) == command:
            return text[i + 1].strip() if i + 1 < len(text) and not text[i + 1].startswith("$") else None
    return None


def _matches(shown: str, got: str) -> bool:
    """The README's line, where `...` stands for what it leaves out."""
    pattern = ".*".join(re.escape(part) for part in shown.split("..."))
    return re.fullmatch(pattern, got) is not None
