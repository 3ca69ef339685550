"""The lm-eval-harness adapter, offline: a local YAML task over a local jsonl, and
each request type called directly and checked against plain forwards of the model."""

import json
import os

import pytest
import torch

# No hub here: lm-eval and datasets must stay offline (set before they are imported).
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval", reason="lm-eval-harness is not installed (pip install 'zoo-core[eval]')")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.utils import get_rolling_token_windows  # noqa: E402

from zoo_core.cli import main  # noqa: E402
from zoo_core.generate import generate  # noqa: E402
from zoo_core.lm_eval_adapter import ZooLM  # noqa: E402
from zoo_core.runs import load_run  # noqa: E402

ITEMS = [
    {"question": "ROMEO: O", "choices": ["Juliet", "qqqqq", "zzz"], "answer": 0},
    {"question": "To be, or not to", "choices": ["be", "xq"], "answer": 0},
    {"question": "Good morrow,", "choices": ["sir", "vvv"], "answer": 0},
    {"question": "KING HENRY: My", "choices": ["lord", "kkk"], "answer": 0},
]


@pytest.fixture(scope="module")
def run(tiny_run):
    os.environ["HF_DATASETS_CACHE"] = str(tiny_run.parent / "hf-datasets")
    return load_run(tiny_run, device="cpu")


def logprob(model, ctx, cont):
    """log p(cont | ctx) from one plain forward."""
    with torch.no_grad():
        logits, _ = model.logits(torch.tensor([ctx + cont]))
    lp = logits[0].double().log_softmax(-1)
    return sum(float(lp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))


def test_a_local_multiple_choice_task_runs_through_the_harness(run, tmp_path, capsys):
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ITEMS))
    (tmp_path / "zoo_tiny_mc.yaml").write_text(f"""task: zoo_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    out = tmp_path / "r.json"
    assert (
        main(["eval", str(run.path), "--tasks", "zoo_tiny_mc", "--include-path", str(tmp_path), "--json", str(out)])
        == 0
    )
    assert "zoo_tiny_mc" in capsys.readouterr().out
    acc = json.loads(out.read_text())["tasks"]["zoo_tiny_mc"]["acc"]
    # The harness asks for log p(" " + choice | question); pick the best choice ourselves.
    tok, right = run.tokenizer, 0
    for item in ITEMS:
        scores = [logprob(run.model, tok.encode(item["question"]), tok.encode(" " + c)) for c in item["choices"]]
        right += max(range(len(scores)), key=scores.__getitem__) == item["answer"]
    assert acc == pytest.approx(right / len(ITEMS))


def test_loglikelihood_and_greedy_flag(run):
    lm = ZooLM(run.model, run.tokenizer, max_length=32)
    tok = run.tokenizer
    ctx = "ROMEO: "
    greedy = run.tokenizer.decode(generate(run.model, [tok.encode(ctx)], 4, temperature=0)[0])
    reqs = [
        Instance("loglikelihood", {}, (ctx, greedy), 0),
        Instance("loglikelihood", {}, (ctx, "zzzz"), 1),
        Instance("loglikelihood", {}, ("", "ROMEO"), 2),
    ]
    (lp_greedy, is_greedy), (lp_other, other_greedy), (lp_empty, _) = lm.loglikelihood(reqs)
    # The trailing space of the context moves to the continuation.
    assert lp_greedy == pytest.approx(logprob(run.model, tok.encode("ROMEO:"), tok.encode(" " + greedy)), rel=1e-5)
    assert is_greedy and not other_greedy and lp_other < lp_greedy
    assert lp_empty == pytest.approx(logprob(run.model, [tok.eos_id], tok.encode("ROMEO")), rel=1e-5)


def test_loglikelihood_rolling_predicts_every_token_once(run):
    tok = run.tokenizer
    lm = ZooLM(run.model, tok, max_length=16)
    short, long = "Good morrow.", "Now is the winter of our discontent made glorious summer."
    got = lm.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (short,), 0), Instance("loglikelihood_rolling", {}, (long,), 1)]
    )
    assert got[0] == pytest.approx(logprob(run.model, [tok.eos_id], tok.encode(short)), rel=1e-5)
    # lm-eval's own window layout as the oracle: disjoint targets, full context for the last window.
    want = 0.0
    for inp, pred in get_rolling_token_windows(tok.encode(long), tok.eos_id, 16, 1):
        ctx = inp[: len(inp) - len(pred) + 1]
        want += logprob(run.model, ctx, pred) if len(ctx) else 0.0
    assert got[1] == pytest.approx(want, rel=1e-5)


def test_generate_until_stops_before_the_until_string(run):
    tok = run.tokenizer
    lm = ZooLM(run.model, tok, max_length=32)
    free = tok.decode(generate(run.model, [tok.encode("ROMEO:")], 12, temperature=0)[0])
    stop = free[5:7]
    got = lm.generate_until(
        [
            Instance("generate_until", {}, ("ROMEO:", {"until": [stop], "max_gen_toks": 12}), 0),
            Instance("generate_until", {}, ("ROMEO:", {"until": ["\x00"], "max_gen_toks": 6}), 1),
        ]
    )
    assert got[0] == free[: free.index(stop)]
    assert got[1] == free[:6]


def test_unknown_task_is_a_user_error(run, tmp_path):
    from zoo_core.errors import UserError
    from zoo_core.lm_eval_adapter import run_tasks

    # include_defaults=False skips indexing lm-eval's ~15k built-in tasks (seconds of CPU).
    with pytest.raises(UserError, match="unknown lm-eval task.*no_such_task"):
        run_tasks(run, "no_such_task", include_path=str(tmp_path), include_defaults=False)


def test_reset_runs_are_scored_with_document_starts(run, monkeypatch):
    """A data.documents=reset run (load_run sets model.documents) is scored as it trained: the
    scored text's first token starts a document (after the start-of-text prefix when the context
    is empty); a stream run never sees the keyword."""
    tok, seen = run.tokenizer, []
    real = run.model.logits

    def spy(tokens, *args, **kwargs):
        seen.append(kwargs.get("resets"))
        return real(tokens, *args, **kwargs)

    monkeypatch.setattr(run.model, "logits", spy)
    reqs = [Instance("loglikelihood", {}, ("ROMEO:", " O"), 0), Instance("loglikelihood", {}, ("", "ROMEO"), 1)]
    ZooLM(run.model, tok, max_length=32).loglikelihood(reqs)
    assert seen and all(r is None for r in seen)
    seen.clear()
    monkeypatch.setattr(run.model, "documents", "reset", raising=False)
    ZooLM(run.model, tok, max_length=32).loglikelihood(reqs[:1])
    ZooLM(run.model, tok, max_length=32).loglikelihood(reqs[1:])
    ZooLM(run.model, tok, max_length=4).loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, ("Good morrow.",), 0)]
    )
    text, empty, *rolling = seen
    assert text[0].tolist() == [True] + [False] * (text.shape[1] - 1)
    assert empty[0, :2].tolist() == [True, True] and not empty[0, 2:].any()
    assert rolling[0][0, :2].tolist() == [True, True] and not any(r.any() for r in rolling[1:])
