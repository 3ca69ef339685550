"""What went wrong for a new user (issue #25): each one, as it happened, with its fix."""

import json
import random
import shlex
from pathlib import Path

import pytest

from zoo_core.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = [
    "model.dim=32",
    "model.n_layers=1",
    "data.seq_len=32",
    "train.global_batch=2",
    "train.eval_every=0",
    "train.eval_batches=1",
    "train.eval_batch_size=2",
    "train.sample_tokens=0",
    "train.progress=false",
    "optim.warmup_steps=1",
]


def readme_command(start: str) -> list[str]:
    """The README's command line starting with `start`, as a shell would split it (comment dropped)."""
    lines = [line.strip() for line in README.read_text().splitlines()]
    found = [line for line in lines if line.startswith(start)]
    assert found, f"README.md has no line starting with {start!r}"
    argv = shlex.split(found[0], comments=True)
    assert argv[0] == "zoo"
    return argv[1:]


def _tiny_corpus(root: Path) -> None:
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog while the cat sat on the mat".split()
    (root / "my-corpus").mkdir()
    for i in range(3):
        text = "\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(200))
        (root / "my-corpus" / f"doc{i}.txt").write_text(text)


def test_the_readme_data_preparation_lines_run_as_written(tmp_path, monkeypatch, capsys):
    """The README prepared data with hf:tok.json before any line made tok.json, and trained on
    it with the byte tokenizer (refused: the shards belong to another tokenizer)."""
    pytest.importorskip("tokenizers")
    monkeypatch.chdir(tmp_path)
    _tiny_corpus(tmp_path)
    assert main(readme_command("zoo tokenizer train")) == 0
    assert main(readme_command("zoo data prepare")) == 0, capsys.readouterr().err
    assert (tmp_path / "data" / "books" / "manifest.json").is_file()
    train = readme_command("zoo train data.source.path=data/books")
    assert main([*train, *TINY, "train.steps=2", "runs_dir=runs"]) == 0, capsys.readouterr().err
    assert (tmp_path / "runs" / "default" / "checkpoints" / "step-00000002").is_dir()


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"" for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(
    "make, overrides, expected",
    [
        (
            lambda runs: (runs / "x").write_text("a file\n"),
            ["name=x"],
            "zoo: '{runs}/x' is a file in place of the run directory; give the run another name=",
        ),
        (
            lambda runs: (runs / "x").mkdir() or (runs / "x" / "notes.txt").write_text("mine\n"),
            ["name=x"],
            "zoo: '{runs}/x' exists and is not a run directory (no config.yaml; it holds notes.txt)",
        ),
        (
            lambda runs: (runs / "file").write_text("a file\n"),
            ["runs_dir={runs}/file", "name=x"],
            "zoo: '{runs}/file' is a file on the way to the run directory",
        ),
    ],
    ids=["file", "foreign-directory", "runs-dir-is-a-file"],
)
def test_a_run_name_taken_by_something_else_is_one_line(tmp_path, capsys, make, overrides, expected):
    """Training into a name a file held ended in a FileExistsError traceback; into another
    program's folder it silently mixed the run's files in with its own."""
    runs = tmp_path / "runs"
    runs.mkdir()
    make(runs)
    before = _listing(tmp_path)
    args = [o.format(runs=runs) for o in overrides]
    if not any(a.startswith("runs_dir=") for a in args):
        args.append(f"runs_dir={runs}")
    for command in (["train"], ["train", "--nproc", "2"], ["launch", "--local"]):
        assert main([*command, *TINY, "train.steps=2", *args]) == 2, command
        err = capsys.readouterr().err
        assert err.startswith(expected.format(runs=runs)), (command, err)
        assert err.count("\n") == 1 and "Traceback" not in err
        assert _listing(tmp_path) == before  # nothing changed


def test_a_run_name_in_use_by_a_run_still_resumes(tmp_path, capsys):
    runs = tmp_path / "runs"
    args = [*TINY, f"runs_dir={runs}", "name=x"]
    assert main(["train", *args, "train.steps=1"]) == 0
    assert main(["train", *args, "train.steps=2"]) == 0
    assert "resumed" in capsys.readouterr().out
    assert (runs / "x" / "checkpoints" / "step-00000002").is_dir()
    assert main(["train", *args, "model.dim=64", "train.steps=3"]) == 2  # another model: refused, as before
    assert "holds checkpoints of another model" in capsys.readouterr().err


def test_launch_local_runs_every_run_of_a_sweep(tmp_path, monkeypatch, capsys):
    """`zoo launch --sweep FILE --local` ran the base config alone and ignored the sweep."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text("- [optim.lr=1e-3]\n- {optim.lr: 3e-3, name: hot}\n")
    args = [*TINY, "train.steps=2", "runs_dir=runs", "name=s"]
    assert main(["launch", *args, "--sweep", "sweep.yaml", "--local", "--nproc", "1"]) == 0
    out = capsys.readouterr().out
    assert "sweep run 1 of 2: runs/s-0" in out and "sweep run 2 of 2: runs/hot" in out
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["hot", "s-0"]
    import yaml

    for name, lr in (("s-0", 1e-3), ("hot", 3e-3)):
        run = tmp_path / "runs" / name
        assert (run / "checkpoints" / "step-00000002").is_dir(), name
        assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == lr
    # A bad entry is refused before any run starts.
    (tmp_path / "bad.yaml").write_text("- [optim.lr=1e-3]\n- [optim.lrr=1]\n")
    assert main(["launch", *args, "name=b", "--sweep", "bad.yaml", "--local"]) == 2
    assert "unknown config key 'optim.lrr'" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["hot", "s-0"]


def _prepared_with_hf(tmp_path, capsys):
    """A corpus, a BPE tokenizer trained on it and the corpus prepared with it, by relative paths."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text((Path(__file__).resolve().parents[1] / "README.md").read_text()[:40000])
    assert main(["tokenizer", "train", "--vocab", "300", "./corpus", "--out", "tok.json"]) == 0
    assert main(["data", "prepare", "./corpus", "--tokenizer", "hf:tok.json", "--out", "data/books"]) == 0
    capsys.readouterr()


def test_prepared_data_records_its_tokenizer_and_refuses_another_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _prepared_with_hf(tmp_path, capsys)
    manifest = json.loads((tmp_path / "data" / "books" / "manifest.json").read_text())
    assert manifest["tokenizer"].startswith("hf-") and manifest["vocab_size"] == 300  # name, hash, vocabulary
    wrong = ["runs_dir=runs", "name=wrong", "data.source.path=data/books"]  # the default tokenizer: bytes
    code = main(["train", *TINY, "train.steps=2", *wrong])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("zoo: 'data/books' was tokenized with 'hf-") and "but the model uses 'bytes-v1'" in err
    assert not (tmp_path / "runs" / "wrong" / "checkpoints").exists()
    ok = ["data.source.path=data/books", "data.tokenizer.name=hf", "data.tokenizer.path=tok.json"]
    assert main(["train", *TINY, "train.steps=2", "runs_dir=runs", "name=right", *ok]) == 0  # its own tokenizer trains


def test_a_run_trained_on_relative_paths_works_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _prepared_with_hf(tmp_path, capsys)
    ok = ["data.source.path=data/books", "data.tokenizer.name=hf", "data.tokenizer.path=tok.json"]
    assert main(["train", *TINY, "train.steps=2", "runs_dir=runs", "name=x", *ok]) == 0
    capsys.readouterr()
    monkeypatch.chdir("/")
    run = str(tmp_path / "runs" / "x")
    assert main(["eval", run]) == 0, capsys.readouterr().err
    assert main(["generate", run, "--prompt", "A", "--max-tokens", "2"]) == 0, capsys.readouterr().err
