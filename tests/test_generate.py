"""Generation for every architecture: prefill in parallel, decode with `step`.

Each installed mixer (and hybrids of them) is checked in float64 on a tiny random
model, where any mismatch is a bug rather than rounding.

Hybrids: by default a covering set of pairs, each installed mixer once as the first layer
and once as the second (mixer i with mixer i+1, cyclically: N pairs for N mixers), plus
attention with windowed attention. ZOO_FULL_MATRIX=1 checks every ordered pair instead
(N*(N-1) pairs; each costs seconds on CPU).
"""

import itertools
import json
import os

import pytest
import torch

from zoo_core.config import load_config, resolve
from zoo_core.generate import StopStrings, cut_at_stop, generate, sample_next
from zoo_core.model import build_model
from zoo_core.registry import get_registry

VOCAB = 48
MIXERS = get_registry().names("mixers")
if os.environ.get("ZOO_FULL_MATRIX") == "1":
    PAIRS = [list(p) for p in itertools.permutations(MIXERS, 2)]
else:  # every mixer first once and second once
    PAIRS = [[m, MIXERS[(i + 1) % len(MIXERS)]] for i, m in enumerate(MIXERS) if len(MIXERS) > 1]
HYBRIDS = [["attention", {"name": "attention", "window": 4}]] + PAIRS


def tiny_model(mixer=None, pattern=None, seed=0):
    overrides = ["model.dim=32", "model.n_layers=2", f"model.vocab_size={VOCAB}", "model.init_std=0.5"]
    if mixer:
        overrides.append(f"model.mixer.name={mixer}")
    if pattern:
        overrides.append("model.pattern=" + json.dumps(pattern))
    reg = get_registry()
    cfg = resolve(load_config(None, overrides), reg)
    torch.manual_seed(seed)
    return build_model(cfg, reg, VOCAB).double().eval()


def greedy_reference(model, prompt, n):
    """Argmax of a full parallel forward over the growing sequence, no state, no step."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model.logits(torch.tensor([seq]))
            seq.append(int(logits[0, -1].argmax()))
    return seq[len(prompt) :]


def prompts(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (5, 1, 9)]


def check_greedy(model, n=12):
    for p in prompts():
        assert generate(model, [p], n, temperature=0) == [greedy_reference(model, p, n)]


@pytest.mark.parametrize("mixer", MIXERS)
def test_greedy_equals_argmax_of_parallel_forward(mixer):
    check_greedy(tiny_model(mixer))


@pytest.mark.parametrize(
    "pattern", HYBRIDS, ids=lambda p: "+".join(m if isinstance(m, str) else f"{m['name']}-w{m['window']}" for m in p)
)
def test_hybrid_greedy_equals_argmax_of_parallel_forward(pattern):
    check_greedy(tiny_model(pattern=pattern), n=8)


@pytest.mark.parametrize("mixer", MIXERS)
def test_batched_generation_equals_one_by_one(mixer):
    model = tiny_model(mixer)
    ps = prompts(1)
    for kw in ({"temperature": 0}, {"temperature": 1.0, "top_k": 20, "top_p": 0.9, "seed": 7}):
        batched = generate(model, ps, 10, **kw)
        seed = kw.pop("seed", 0)
        alone = [generate(model, [p], 10, seed=seed + r, **kw)[0] for r, p in enumerate(ps)]
        assert batched == alone, kw


def test_rows_that_stop_early_leave_the_batch_without_changing_the_others():
    model = tiny_model("attention")
    ps = prompts(2)
    full = generate(model, ps, 10, temperature=0)
    cut = generate(model, ps, 10, temperature=0, stop=lambda r, ids: r == 1 and len(ids) == 3)
    assert cut[1] == full[1][:3] and cut[0] == full[0] and cut[2] == full[2]


def test_eos_ends_a_row_and_is_kept():
    model = tiny_model("attention")
    p = prompts(3)[0]
    free = generate(model, [p], 10, temperature=0)[0]
    eos = free[4]
    assert generate(model, [p], 10, temperature=0, eos_id=eos)[0] == free[: free.index(eos) + 1]


def test_timings_count_prefill_and_decode_separately():
    t = {}
    out = generate(tiny_model("attention"), [[1, 2, 3], [4, 5, 6, 7]], 5, temperature=0, timings=t)
    assert t["prefill_tokens"] == 6 and t["new_tokens"] == sum(map(len, out)) == 10
    assert t["step_tokens"] == 1 + 4 + 4  # row 1's last prompt token, then 4 fed samples each
    assert t["prefill_s"] > 0 and t["decode_s"] > 0


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    model = tiny_model("attention")
    a = generate(model, [[1, 2]], 16, temperature=1.5, seed=1)
    assert a == generate(model, [[1, 2]], 16, temperature=1.5, seed=1)
    assert a != generate(model, [[1, 2]], 16, temperature=1.5, seed=2)


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]]).repeat(400, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, 1.0, 2, 1.0, g).tolist()) == {0, 1}
    # p = softmax: [0.636, 0.234, 0.086, ...]; top_p 0.8 keeps the first two only.
    assert set(sample_next(logits, 1.0, 0, 0.8, g).tolist()) == {0, 1}
    assert set(sample_next(logits, 1.0, 0, 0.5, g).tolist()) == {0}
    assert sample_next(logits[:1], 0.0, 0, 1.0, g).tolist() == [0]


def test_stop_strings_match_the_decoded_tail():
    decode = lambda ids: bytes(ids).decode("utf-8", errors="replace")  # noqa: E731
    stop = StopStrings(decode, ["\n\n", "é!"])
    assert not stop(0, list(b"abc\n"))
    assert stop(0, list(b"x" * 100 + b"abc\n\n"))
    assert stop(0, list(b"caf") + list("é!".encode()))  # a two-byte character inside the stop string
    assert cut_at_stop("ab\n\ncd", ["\n\n"]) == ("ab\n\n", True)
    assert cut_at_stop("ab\n\ncd", ["\n\n", "b"], keep=False) == ("a", True)


def test_stop_strings_end_generation():
    model = tiny_model("attention")
    free = generate(model, [[1, 2, 3]], 12, temperature=0)[0]
    decode = lambda ids: "".join(chr(65 + i) for i in ids)  # one letter per token  # noqa: E731
    target = decode(free[3:5])
    out = generate(model, [[1, 2, 3]], 12, temperature=0, stop=StopStrings(decode, [target]))[0]
    assert out == free[: decode(free).find(target) + 2]  # right after the first occurrence


def test_empty_prompt_is_an_error():
    with pytest.raises(ValueError, match="at least one token"):
        generate(tiny_model("attention"), [[1], []], 3)
