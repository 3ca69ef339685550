"""`zoo eval`: loss, perplexity and bits/byte on val and extra splits, at any world size."""

import json
import math
import os
import subprocess
import sys

import pytest

from zoo_core.cli import main
from zoo_core.distributed import World
from zoo_core.errors import UserError
from zoo_core.evaluate import evaluate, parse_splits, split_source
from zoo_core.registry import get_registry
from zoo_core.runs import load_run

TINY_RUN_EXTRA = ["train.eval_batches=2"]


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def milton(run_dir):  # run_dir first: it points ZOO_CACHE at the shared test cache
    from zoo_core.data.milton import milton_files

    try:
        return milton_files()
    except UserError as exc:  # no network and no cached copy
        pytest.skip(f"Milton's texts are unavailable here: {exc}")


def eval_json(capsys, *argv):
    assert main(["eval", *argv, "--json", "-", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_reports_val_and_milton_as_table_and_json(run_dir, milton, tmp_path, capsys):
    path = tmp_path / "eval.json"
    assert main(["eval", str(run_dir), "--batches", "2", "--json", str(path), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "bits/byte" in table and "milton" in table and "val" in table
    report = json.loads(path.read_text())
    assert report["step"] == 3 and set(report["splits"]) == {"val", "milton"}
    for m in report["splits"].values():
        assert m["tokens"] == 2 * 4 * 32  # batches x streams (train.eval_batch_size) x seq_len
        assert m["ppl"] == pytest.approx(math.exp(m["loss"]))
        assert 0 < m["bpb"] < 12
    # A byte model's bits/byte is its loss in bits over bytes per token (EOS separators carry no bytes).
    run = load_run(run_dir, device="cpu")
    src = split_source(run.cfg, get_registry(), run.tokenizer, "milton", 4)
    assert report["splits"]["milton"]["bpb"] == pytest.approx(
        report["splits"]["milton"]["loss"] / math.log(2) / src.bytes_per_token
    )
    assert 0.99 < src.bytes_per_token <= 1.0


def test_eval_uses_the_same_code_as_validation_during_training(run_dir, capsys):
    logged = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in logged if "val_loss" in r][-1]
    got = eval_json(capsys, str(run_dir), "--splits", "val", "--batches", "2", "--batch-size", "4")["splits"]["val"]
    assert got["tokens"] == val["val_tokens"]
    assert got["loss"] == pytest.approx(val["val_loss"], rel=1e-6)
    assert got["bpb"] == pytest.approx(val["val_bpb"], rel=1e-6)


def test_an_extra_split_from_a_path_is_all_of_its_text(run_dir, tmp_path, capsys):
    text = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200))
    (tmp_path / "extra.txt").write_text(text)
    got = eval_json(capsys, str(run_dir), "--splits", str(tmp_path / "extra.txt"), "--batch-size", "2")
    m = got["splits"][str(tmp_path / "extra.txt")]
    # A full pass, no held-out fraction: all but the last partial window of each of 2 streams.
    assert len(text) - 2 * (32 + 1) <= m["tokens"] <= len(text)


def test_two_ranks_give_the_numbers_of_one(run_dir, capsys):
    one = eval_json(capsys, str(run_dir), "--splits", "val", "--batches", "3", "--batch-size", "4")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node=2",
            "-m",
            "zoo_core.commands.eval",
            str(run_dir),
            "--splits",
            "val",
            "--batches",
            "3",
            "--batch-size",
            "4",
            "--json",
            "-",
            "--quiet",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert two["world_size"] == 2
    a, b = one["splits"]["val"], two["splits"]["val"]
    assert a["tokens"] == b["tokens"]
    for key in ("loss", "bpb", "accuracy"):
        assert b[key] == pytest.approx(a[key], rel=1e-5)


def test_more_ranks_than_streams_is_a_clear_error(run_dir):
    run = load_run(run_dir, device="cpu")
    src = split_source(run.cfg, get_registry(), run.tokenizer, "val", 2)
    with pytest.raises(UserError, match="raise the eval batch size"):
        evaluate(run.model, src, World(rank=0, size=4), 1)


def test_bad_input_is_one_line(run_dir, tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run directory" in err
    assert main(["eval", str(run_dir), "--splits", str(tmp_path / "nope.txt"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.txt" in err
    with pytest.raises(UserError, match="--splits is empty"):
        parse_splits(" , ")
    assert parse_splits(None) == ["val", "milton"]
