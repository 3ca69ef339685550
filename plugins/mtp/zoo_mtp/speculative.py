"""Self-speculative greedy decoding with the multi-token heads (Gloeckle et al. 2024, section 3.2).

Each round, from the trunk's hidden state after the last accepted token:
1. head 1 gives the next token (it is exactly what greedy decoding would pick),
   heads 2..n draft the n-1 tokens after it;
2. one parallel trunk forward over [next token, drafts], continuing from the
   decoding state (`forward(x, state, return_state=True)`, which every mixer
   has), gives head 1's greedy choice after each candidate;
3. the longest prefix of drafts that head 1 agrees with is accepted.
If every draft is accepted, the state after the forward is the new state.
Otherwise the state ran past a rejected draft, and a recurrent state cannot be
cut back: we keep the state from before the round and prepend the accepted
tokens to the next round's forward, so a round costs one trunk forward either
way. When those pending tokens grow longer than n_draft (several rejections in
a row) they are committed with one extra forward, to keep each forward short.

Every emitted token is head 1's greedy choice given the exact prefix before
it, so the output is identical to `zoo_core.generate.generate(temperature=0)`
(up to floating-point ties between the parallel and the step path).
Greedy only; each prompt is decoded on its own (batch 1).

    python -m zoo_mtp.speculative runs/NAME --prompt "ROMEO:" --max-tokens 200 --compare
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Sequence

import torch

from zoo_core.errors import UserError


@dataclasses.dataclass
class SpeculativeStats:
    rounds: int = 0  # verification forwards
    reruns: int = 0  # extra forwards to commit accepted tokens after repeated rejections
    drafted: int = 0  # draft tokens proposed by heads 2..n
    accepted: int = 0  # draft tokens head 1 agreed with
    emitted: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / max(self.drafted, 1)

    @property
    def tokens_per_round(self) -> float:
        return self.emitted / max(self.rounds, 1)


def _mtp_head(model: torch.nn.Module):
    head = getattr(model, "head", None)
    if not hasattr(head, "head_logits") or getattr(head, "n_heads", 1) < 2:
        raise UserError(
            "self-speculative decoding needs a model trained with model.loss.name=mtp and "
            "model.loss.n_heads >= 2 (heads 2..n draft the tokens)"
        )
    return head


@torch.no_grad()
def speculative_generate(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    n_draft: int | None = None,
    stop: Callable[[int, list[int]], bool] | None = None,
    on_token: Callable[[int, int], None] | None = None,
    stats: SpeculativeStats | None = None,
) -> list[list[int]]:
    """Greedy continuation of each prompt, drafted by heads 2..n and verified by head 1.

    Same arguments and result as `zoo_core.generate.generate(..., temperature=0)`;
    `n_draft` (default n_heads - 1) drafts fewer tokens per round; `stats` collects counts."""
    head = _mtp_head(model)
    n_draft = head.n_heads - 1 if n_draft is None else n_draft
    if not 1 <= n_draft <= head.n_heads - 1:
        raise UserError(f"n_draft={n_draft}: this model's heads can draft 1 to {head.n_heads - 1} tokens")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (prepend BOS for an empty prompt)")
    model.eval()
    stats = stats if stats is not None else SpeculativeStats()
    return [
        _one_row(model, head, row, list(p), max_new_tokens, n_draft, stop, on_token, stats)
        for row, p in enumerate(prompts)
    ]


def _one_row(
    model, head, row: int, prompt: list[int], max_new: int, n_draft: int, stop, on_token, stats: SpeculativeStats
) -> list[int]:
    device = next(model.parameters()).device
    h, state = model.hidden(torch.tensor([prompt], device=device), return_state=True)
    h_last = h[:, -1]
    pending = torch.zeros(1, 0, dtype=torch.long, device=device)  # accepted, not yet in `state`
    out: list[int] = []
    while len(out) < max_new:
        budget = max_new - len(out)
        nxt = head.head_logits(h_last, 0).argmax(-1)
        drafts = [head.head_logits(h_last, k).argmax(-1) for k in range(1, min(n_draft, budget - 1) + 1)]
        cand = torch.stack([nxt] + drafts, dim=1)  # (1, L)
        L, P = cand.shape[1], pending.shape[1]
        # One forward over the pending tokens and the candidates, from the last committed state.
        h_seq, state_after = model.hidden(torch.cat([pending, cand], 1), state, return_state=True)
        greedy = head.logits(h_seq[:, P:]).argmax(-1)  # greedy[:, i]: head 1's choice after cand[:, :i+1]
        n_ok = 1  # the first candidate is head 1's own choice
        while n_ok < L and int(cand[0, n_ok]) == int(greedy[0, n_ok - 1]):
            n_ok += 1
        stats.rounds += 1
        stats.drafted += L - 1
        stats.accepted += n_ok - 1
        h_last = h_seq[:, P + n_ok - 1]
        if n_ok == L:  # everything accepted: the forward's end state is the state
            state, pending = state_after, pending[:, :0]
        else:  # the state ran past a rejected draft; keep the accepted tokens for the next forward
            pending = torch.cat([pending, cand[:, :n_ok]], 1)
            if pending.shape[1] > n_draft:  # bound the next forward: commit the pending tokens now
                _, state = model.hidden(pending, state, return_state=True)
                pending = pending[:, :0]
                stats.reruns += 1
        for tok in cand[0, :n_ok].tolist():
            out.append(tok)
            stats.emitted += 1
            if on_token:
                on_token(row, tok)
            if stop is not None and stop(row, out):
                return out
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from zoo_core.cli import run_guarded

    p = argparse.ArgumentParser(prog="python -m zoo_mtp.speculative", description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--prompt", default="")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--n-draft", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compare", action="store_true", help="also run plain greedy decoding and compare")
    args = p.parse_args(argv)
    return run_guarded(lambda: _cli(args))


def _cli(args) -> None:
    from zoo_core.generate import generate
    from zoo_core.runs import load_run

    run = load_run(args.run, device=args.device)
    tok = run.tokenizer
    prompt = tok.encode(args.prompt) or [tok.bos_id]
    stats = SpeculativeStats()
    t0 = time.perf_counter()
    ids = speculative_generate(run.model, [prompt], args.max_tokens, n_draft=args.n_draft, stats=stats)[0]
    spec_s = time.perf_counter() - t0
    print(args.prompt + tok.decode(ids))
    print(
        f"speculative: {len(ids) / spec_s:.1f} tokens/s, {stats.acceptance:.1%} of drafts accepted, "
        f"{stats.tokens_per_round:.2f} tokens per round"
    )
    if args.compare:
        t0 = time.perf_counter()
        plain = generate(run.model, [prompt], args.max_tokens, temperature=0)[0]
        plain_s = time.perf_counter() - t0
        print(
            f"plain greedy: {len(plain) / plain_s:.1f} tokens/s; speed-up {plain_s / spec_s:.2f}x; "
            f"outputs {'identical' if plain == ids else 'DIFFER'}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
