"""`zoo generate`: streaming, batched prompts, stop strings, --bench."""

import json

import pytest

from zoo_core.cli import main
from zoo_core.generate import generate
from zoo_core.runs import load_run


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return str(tiny_run)


def zoo(capsys, *argv):
    code = main(["generate", *argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_one_prompt_streams_the_greedy_continuation(run_dir, capsys):
    out = zoo(capsys, run_dir, "--prompt", "ROMEO:", "--max-tokens", "12", "--temperature", "0", "--ignore-eos")
    run = load_run(run_dir, device="cpu")
    ids = generate(run.model, [run.tokenizer.encode("ROMEO:")], 12, temperature=0)[0]
    assert out == "ROMEO:" + run.tokenizer.decode(ids) + "\n"


def test_a_batch_of_prompts_samples_what_each_samples_alone(run_dir, tmp_path, capsys):
    common = ["--max-tokens", "10", "--temperature", "1.0", "--top-k", "40", "--ignore-eos"]
    batched = zoo(capsys, run_dir, "--prompt", "ROMEO:", "--prompt", "To be, or not", "--seed", "5", *common)
    alone = [
        zoo(capsys, run_dir, "--prompt", p, "--seed", str(5 + i), *common)
        for i, p in enumerate(["ROMEO:", "To be, or not"])
    ]
    assert batched == "".join(f"--- [{i}]\n{text}" for i, text in enumerate(alone))
    (tmp_path / "p.txt").write_text("ROMEO:\nTo be, or not\n")
    assert zoo(capsys, run_dir, "--prompts-file", str(tmp_path / "p.txt"), "--seed", "5", *common) == batched


def test_stop_string_ends_the_output(run_dir, capsys):
    free = zoo(capsys, run_dir, "--prompt", "ROMEO:", "--max-tokens", "16", "--temperature", "0", "--ignore-eos")
    stop = free[len("ROMEO:") + 4 : len("ROMEO:") + 6]
    out = zoo(
        capsys,
        run_dir,
        "--prompt",
        "ROMEO:",
        "--max-tokens",
        "16",
        "--temperature",
        "0",
        "--ignore-eos",
        "--stop",
        stop,
    )
    cut = free.index(stop, len("ROMEO:")) + len(stop)
    assert out == free[:cut] + "\n"


def test_bench_reports_prefill_and_decode_speed(run_dir, capsys):
    out = zoo(capsys, run_dir, "--bench", "--batch-size", "2", "--prompt-len", "16", "--max-tokens", "8", "--json", "-")
    r = json.loads(out)
    assert r["batch"] == 2 and r["prompt_len"] == 16 and r["new_tokens"] == 8
    assert r["prefill_tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0 and r["state_mb"] > 0


def test_bad_options_are_one_line(run_dir, capsys):
    assert main(["generate", run_dir, "--max-tokens", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-tokens" in err
    assert main(["generate", run_dir, "--top-p", "0"]) == 2
    assert "--top-p" in capsys.readouterr().err
