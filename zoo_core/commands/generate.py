"""zoo generate RUN --prompt TEXT [--prompt TEXT ...]: sample from a run's latest checkpoint.

One prompt streams to the terminal token by token; several (repeated --prompt or
--prompts-file) run as one ragged batch and print in order. `--bench` times
prefill and decode separately on random prompts instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16", "float64")


def unescape(s: str) -> str:
    r"""`--stop '\n\n'` means two newlines: the shell passes the backslashes through."""
    return s.replace("\\n", "\n").replace("\\t", "\t")


def read_prompts(args) -> list[str]:
    from zoo_core.errors import UserError

    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise UserError(f"--prompts-file '{path}' does not exist; give a text file with one prompt per line")
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if path.suffix == ".jsonl":
                if line.strip():
                    try:
                        prompts.append(json.loads(line)["prompt"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise UserError(f"{path}:{i + 1} is not a JSON object with a 'prompt' field") from None
            else:
                prompts.append(unescape(line))
    return prompts or [""]


class TextStream:
    """Decodes a row's new ids as they come and prints only what is new, holding back
    half a UTF-8 character and anything past a stop string."""

    def __init__(self, decode, stop_strings: Sequence[str], out=None) -> None:
        self.decode, self.stop_strings, self.out = decode, stop_strings, out or sys.stdout
        self.ids: list[int] = []
        self.shown = 0

    def text(self) -> str:
        from zoo_core.loop.generate import cut_at_stop

        return cut_at_stop(self.decode(self.ids), self.stop_strings)[0]

    def __call__(self, row: int, tid: int) -> None:
        self.ids.append(tid)
        text = self.text()
        if text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            return
        print(text[self.shown :], end="", file=self.out, flush=True)
        self.shown = len(text)

    def finish(self) -> None:
        print(self.text()[self.shown :], file=self.out, flush=True)


def bench(run_, args) -> None:
    import torch

    from zoo_core.cli import table
    from zoo_core.loop.generate import generate

    g = torch.Generator().manual_seed(args.seed)
    vocab = run_.tokenizer.vocab_size
    prompts = torch.randint(0, vocab, (args.batch_size, args.prompt_len), generator=g).tolist()
    generate(run_.model, prompts, min(args.max_tokens, 8), temperature=0)  # warm-up (allocator, kernels)
    t: dict = {}
    generate(run_.model, prompts, args.max_tokens, temperature=0, timings=t)
    result = {
        "device": str(next(run_.model.parameters()).device),
        "dtype": args.dtype,
        "batch": args.batch_size,
        "prompt_len": args.prompt_len,
        "new_tokens": args.max_tokens,
        "prefill_tokens_per_s": t["prefill_tokens"] / t["prefill_s"],
        "decode_tokens_per_s": t["new_tokens"] / t["decode_s"],
        "prefill_s": t["prefill_s"],
        "decode_s": t["decode_s"],
        "state_mb": run_.model.state_size(args.prompt_len + args.max_tokens) * args.batch_size / 2**20,
    }
    if args.json:
        text = json.dumps(result, indent=2)
        print(text) if args.json == "-" else Path(args.json).write_text(text + "\n")
    if args.json != "-":
        print(
            table(
                [
                    [
                        result["device"],
                        args.dtype,
                        args.batch_size,
                        args.prompt_len,
                        args.max_tokens,
                        f"{result['prefill_tokens_per_s']:,.0f}",
                        f"{result['decode_tokens_per_s']:,.0f}",
                        f"{result['state_mb']:.2f}",
                    ]
                ],
                ["device", "dtype", "batch", "prompt", "new", "prefill tok/s", "decode tok/s", "state MB"],
            )
        )


def run(args) -> None:
    import torch

    from zoo_core.errors import UserError
    from zoo_core.loop.generate import StopStrings, generate
    from zoo_core.loop.runs import load_run

    for name in ("max_tokens", "batch_size", "prompt_len"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0:
        raise UserError("sampling needs --temperature >= 0, 0 < --top-p <= 1 and --top-k >= 0 (0 = off)")
    run_ = load_run(args.run, device=args.device, dtype=getattr(torch, args.dtype))
    if args.bench:
        return bench(run_, args)
    tok = run_.tokenizer
    texts = read_prompts(args)
    # An empty prompt starts where documents start in training: after the separator.
    start = tok.eos_id if tok.eos_id is not None else tok.bos_id
    prompts = [tok.encode(t) or [start] for t in texts]
    stops = [unescape(s) for s in args.stop or []]
    streams = [TextStream(tok.decode, stops) for _ in prompts]
    single = len(prompts) == 1
    if single:
        print(texts[0], end="", flush=True)
    generate(
        run_.model,
        prompts,
        args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=StopStrings(tok.decode, stops) if stops else None,
        eos_id=None if args.ignore_eos else tok.eos_id,
        on_token=streams[0] if single else (lambda r, t: streams[r].ids.append(t)),
    )
    if single:
        streams[0].finish()
        return
    for i, (text, s) in enumerate(zip(texts, streams)):
        print(f"--- [{i}]")
        print(text + s.text())


def add_parser(sub) -> None:
    s = sub.add_parser("generate", help="sample from a run's latest checkpoint (or --bench its speed)")
    s.add_argument("run", help="a run directory (runs/<name>)")
    s.add_argument("--prompt", action="append", help="a prompt; repeat for a batch (default: empty)")
    s.add_argument("--prompts-file", default=None, help="one prompt per line (or .jsonl with a 'prompt' field)")
    s.add_argument("--max-tokens", type=int, default=200, help="new tokens per prompt")
    s.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    s.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0 = all)")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    s.add_argument("--seed", type=int, default=0, help="prompt i samples with seed + i")
    s.add_argument("--stop", action="append", help=r"stop a row at this string (repeatable; '\n' is a newline)")
    s.add_argument("--ignore-eos", action="store_true", help="keep going after the end-of-document token")
    s.add_argument("--device", default="auto")
    s.add_argument("--dtype", default="float32", choices=DTYPES)
    s.add_argument("--bench", action="store_true", help="report prefill and decode tokens/s on random prompts")
    s.add_argument("--batch-size", type=int, default=1, help="--bench: prompts per batch")
    s.add_argument("--prompt-len", type=int, default=128, help="--bench: prompt tokens")
    s.add_argument("--json", default=None, help="--bench: also write the numbers as JSON to PATH (- for stdout)")
    s.set_defaults(fn=run)
