"""Self-speculative greedy decoding emits exactly what plain greedy decoding emits."""

import pytest
import torch

from zoo_core.errors import UserError
from zoo_core.generate import generate
from zoo_core.registry import get_registry
from zoo_mtp.speculative import SpeculativeStats, speculative_generate

PROMPTS = [[1, 5, 9, 2], [7]]


@pytest.mark.parametrize("mixer", get_registry().names("mixers"))
def test_greedy_output_is_identical(mixer, build_lm):
    model = build_lm(mixer, ["model.loss.n_heads=4"])
    plain = generate(model, PROMPTS, 16, temperature=0)
    stats = SpeculativeStats()
    spec = speculative_generate(model, PROMPTS, 16, stats=stats)
    assert spec == plain
    assert stats.emitted == 32 and stats.drafted > 0


def test_oracle_drafts_exercise_accept_partial_and_reject(build_lm):
    """Drafts that are right except at chosen positions: every acceptance branch runs, output unchanged."""
    model = build_lm("attention", ["model.loss.n_heads=4", "model.loss.form=block"])
    prompt = [3, 1, 4, 1, 5]
    truth = generate(model, [prompt], 40, temperature=0)[0]
    head, stats = model.head, SpeculativeStats()
    real = head.head_logits

    def oracle(h, k):  # head k+1 drafts token number len(out)+k; wrong where (position % 7 == 3)
        if k == 0:
            return real(h, 0)
        pos = stats.emitted + k
        tok = truth[pos] if pos % 7 != 3 and pos < len(truth) else (truth[min(pos, 39)] + 1) % 64
        return torch.nn.functional.one_hot(torch.tensor([tok]), 64).to(h.dtype)

    head.head_logits = oracle
    out = speculative_generate(model, [prompt], 40, stats=stats)[0]
    assert out == truth
    assert 0 < stats.accepted < stats.drafted  # some drafts accepted, some rejected
    assert stats.rounds < len(truth)  # fewer trunk forwards than tokens
    assert stats.tokens_per_round > 2


def test_needs_an_mtp_model_with_drafting_heads(build_lm):
    with pytest.raises(UserError, match="n_heads >= 2"):
        speculative_generate(build_lm("attention", ["model.loss.n_heads=1"]), [[1]], 4)
    with pytest.raises(UserError, match="draft 1 to 3 tokens"):
        speculative_generate(build_lm("attention", ["model.loss.n_heads=4"]), [[1]], 4, n_draft=5)
