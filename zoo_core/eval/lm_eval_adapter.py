"""lm-evaluation-harness adapter: any zoo run as an `lm_eval` LM (extra `[eval]`).

    zoo eval runs/x --tasks hellaswag,arc_easy          # needs the Hugging Face hub
    zoo eval runs/x --tasks my_task --include-path tasks/   # local YAML tasks, offline

Nothing here depends on the architecture: scoring is one causal forward over
right-padded rows (padding after the scored tokens cannot change them), and
generation is `zoo_core.loop.generate`, so attention, RNNs, SSMs and hybrids all work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from zoo_core.errors import UserError

try:
    from lm_eval.api.model import LM
except ImportError:  # only `--tasks` imports this module
    raise UserError(
        "lm-eval-harness is not installed; run: pip install 'zoo-core[eval]' (or pip install 'lm-eval>=0.4')"
    ) from None

from zoo_core.loop.generate import StopStrings, cut_at_stop, generate


class ZooLM(LM):
    """`model` is a zoo LanguageModel, `tokenizer` its zoo Tokenizer. Contexts longer than
    `max_length` tokens keep their last `max_length` (the run's training length by default)."""

    def __init__(
        self, model: torch.nn.Module, tokenizer: Any, max_length: int, batch_size: int = 16, carry_state: bool = False
    ) -> None:
        super().__init__()
        self.model, self.tok = model.eval(), tokenizer
        self.max_length, self.batch_size, self.carry_state = max_length, max(1, batch_size), carry_state
        self._device = next(model.parameters()).device
        # Documents in zoo's training data are separated by EOS, so EOS is "start of text".
        self.prefix = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.bos_id
        if self.prefix is None:
            raise UserError("the tokenizer has neither EOS nor BOS; lm-eval needs one to score empty contexts")
        # data.documents=reset (load_run sets model.documents): score as the run trained, a document's
        # first token marked as a start.
        self.resets = getattr(model, "documents", "stream") == "reset"

    def _starts(self, rows: Sequence[Sequence[int]], width: int, whole: Sequence[bool]) -> dict[str, torch.Tensor]:
        """`resets=` for rows of input ids under data.documents=reset ({} under stream): a row that holds its
        document from the start begins one at 0, and after the start-of-text prefix at 1 (training data
        puts a document's first token after the previous one's EOS)."""
        if not self.resets:
            return {}
        r = torch.zeros(len(rows), width, dtype=torch.bool, device=self._device)
        for j, (ids, full) in enumerate(zip(rows, whole)):
            if full and ids:
                r[j, 0] = True
                r[j, 1] = len(ids) > 1 and ids[0] == self.prefix
        return {"resets": r}

    # -- tokens -------------------------------------------------------------------------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of context and continuation as the model would read them together.
        A trailing space of the context moves to the continuation, where word tokenizers want it."""
        if not context:
            return [self.prefix], self.tok.encode(continuation)
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole, ctx = self.tok.encode(context + continuation), self.tok.encode(context)
        if whole[: len(ctx)] != ctx:  # the tokenizer merged across the boundary
            return ctx, self.tok.encode(continuation)
        return ctx, whole[len(ctx) :]

    @torch.no_grad()
    def score(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of log p(continuation | context), whether greedy decoding gives the continuation)."""
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        rows = []
        for i, (ctx, cont) in enumerate(pairs):
            if not cont:
                results[i] = (0.0, True)
                continue
            seq = (ctx + cont)[-(self.max_length + 1) :]
            n = min(len(cont), len(seq) - 1)  # a continuation longer than max_length keeps its tail
            rows.append((i, seq[:-1], seq[-n:], len(seq) == len(ctx) + len(cont)))
        rows.sort(key=lambda r: -len(r[1]))  # similar lengths share a batch
        for b in range(0, len(rows), self.batch_size):
            chunk = rows[b : b + self.batch_size]
            width = len(chunk[0][1])
            inputs = torch.zeros(len(chunk), width, dtype=torch.long, device=self._device)
            for j, (_, inp, _, _) in enumerate(chunk):
                inputs[j, : len(inp)] = torch.tensor(inp, device=self._device)
            docs = self._starts([r[1] for r in chunk], width, [r[3] for r in chunk])
            logp = self.model.logits(inputs, **docs)[0].double().log_softmax(-1)
            for j, (i, inp, target, _) in enumerate(chunk):
                n = len(target)
                lp = logp[j, len(inp) - n : len(inp)]
                t = torch.tensor(target, device=self._device)
                results[i] = (float(lp.gather(-1, t[:, None]).sum()), bool((lp.argmax(-1) == t).all()))
        return results  # type: ignore[return-value]

    # -- the three request types ------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = self.score([self.encode_pair(*req.args) for req in requests])
        for req, res in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return out

    @torch.no_grad()
    def rolling_logprob(self, text: str) -> float:
        """log p(text | start of document), every token predicted once. Windows of
        `max_length` targets; each sees up to `max_length` tokens of context (the last
        window a full one). A run trained with carried state carries it instead."""
        ids = [self.prefix] + self.tok.encode(text)
        L, total = self.max_length, 0.0
        state = None
        for a in range(0, len(ids) - 1, L):
            b = min(a + L, len(ids) - 1)  # targets ids[a+1 .. b]
            start = a if self.carry_state else max(0, b - L)
            inp = torch.tensor([ids[start:b]], device=self._device)
            docs = self._starts([ids[start:b]], b - start, [start == 0])
            logits, state = self.model.logits(inp, state=state, return_state=self.carry_state, **docs)
            lp = logits[0, a - start :].double().log_softmax(-1)
            t = torch.tensor(ids[a + 1 : b + 1], device=self._device)
            total += float(lp.gather(-1, t[:, None]).sum())
        return total

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in requests:
            out.append(self.rolling_logprob(req.args[0]))
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, out[-1])
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy by default (`do_sample` false or temperature 0); cut before the first `until`."""
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
        for idx in groups.values():
            kw = dict(requests[idx[0]].args[1])
            until = kw.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kw.pop("max_gen_toks", 256))
            temperature = float(kw.pop("temperature", 0.0)) if kw.pop("do_sample", False) else 0.0
            top_k, top_p = int(kw.pop("top_k", 0) or 0), float(kw.pop("top_p", 1.0) or 1.0)
            keep = max(1, self.max_length - max_new)
            for b in range(0, len(idx), self.batch_size):
                rows = idx[b : b + self.batch_size]
                prompts = [(self.tok.encode(requests[i].args[0]) or [self.prefix])[-keep:] for i in rows]
                ids = generate(
                    self.model,
                    prompts,
                    max_new,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    seed=int(kw.get("seed", 0)),
                    stop=StopStrings(self.tok.decode, until),
                    eos_id=self.tok.eos_id,
                )
                for i, new in zip(rows, ids):
                    out[i] = cut_at_stop(self.tok.decode(new), until, keep=False)[0]
                    self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
        return out  # type: ignore[return-value]


def run_tasks(
    run_: Any,
    tasks: str,
    include_path: str | None = None,
    limit: float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 16,
    max_length: int | None = None,
    include_defaults: bool = True,
) -> dict[str, dict[str, Any]]:
    """lm-eval's `simple_evaluate` on `run_` (from `zoo_core.loop.runs.load_run`); {task: {metric: value}}."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise UserError("--tasks is empty; give task names, e.g. --tasks hellaswag,arc_easy")
    manager = None
    if include_path:  # indexing lm-eval's ~15k built-in tasks takes seconds: skip it when unneeded
        manager = TaskManager(include_path=include_path, include_defaults=False)
        manager = manager if all(n in manager.all_tasks for n in names) else None
    if manager is None:
        manager = TaskManager(include_path=include_path, include_defaults=include_defaults)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        where = f" or in --include-path {include_path}" if include_path else "; local YAML tasks need --include-path"
        raise UserError(f"unknown lm-eval task(s) {', '.join(unknown)}: not in lm-eval's task list{where}")
    lm = ZooLM(
        run_.model,
        run_.tokenizer,
        max_length or run_.cfg.data.seq_len,
        batch_size,
        carry_state=bool(run_.cfg.train.carry_state),
    )
    limit_arg = int(limit) if limit is not None and limit >= 1 else limit
    results = simple_evaluate(
        model=lm,
        tasks=names,
        task_manager=manager,
        limit=limit_arg,
        num_fewshot=num_fewshot,
        log_samples=False,
        bootstrap_iters=1000,
    )
    return {task: tidy(metrics) for task, metrics in (results or {}).get("results", {}).items()}


def tidy(metrics: dict[str, Any]) -> dict[str, float]:
    """lm-eval's {"acc,none": .., "acc_stderr,none": ..} -> {"acc": .., "acc_stderr": ..};
    a filter other than `none` stays in the name ("exact_match,flexible" -> "exact_match/flexible")."""
    out = {}
    for key, value in metrics.items():
        name, sep, filt = key.partition(",")
        if sep and isinstance(value, (int, float)):
            out[name if filt == "none" else f"{name}/{filt}"] = float(value)
    return out
