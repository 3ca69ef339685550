"""zoo generate RUN --prompt TEXT: sample from a run's latest checkpoint, streaming."""
from typing import List


def run(args) -> None:
    from zoo_core.generate import generate
    from zoo_core.runs import load_run
    run_ = load_run(args.run, device=args.device)
    tok = run_.tokenizer
    prompt = tok.encode(args.prompt) or [tok.bos_id]
    print(args.prompt, end="", flush=True)
    pending: List[int] = []

    def on_token(row: int, tid: int) -> None:
        pending.append(tid)
        text = tok.decode(pending)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            print(text, end="", flush=True)
            pending.clear()

    generate(run_.model, [prompt], args.max_tokens, temperature=args.temperature, top_k=args.top_k,
             top_p=args.top_p, seed=args.seed, on_token=on_token)
    print(tok.decode(pending))


def add_parser(sub) -> None:
    s = sub.add_parser("generate", help="sample from a run's latest checkpoint")
    s.add_argument("run")
    s.add_argument("--prompt", default="")
    s.add_argument("--max-tokens", type=int, default=200)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=run)
