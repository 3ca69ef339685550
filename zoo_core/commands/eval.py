"""zoo eval RUN [--splits val,milton] [--tasks T1,T2] [--json PATH|-] [--nproc N]

Loss, per-token perplexity and bits per byte on the run's validation split and
named extra splits (default: val plus Milton), from the latest checkpoint,
whatever number of ranks wrote it. Under torchrun (or --nproc N) the evaluation
streams are split over ranks and the sums all-reduced:

    torchrun --nproc-per-node 2 -m zoo_core.commands.eval runs/x
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def split_rows(splits: dict[str, dict[str, float]]) -> list[list[str]]:
    return [
        [name, f"{m['tokens']:,}", f"{m['loss']:.4f}", f"{m['ppl']:.3f}", f"{m['bpb']:.4f}", f"{m['accuracy']:.4f}"]
        for name, m in splits.items()
    ]


def task_rows(tasks: dict[str, dict[str, float]]) -> list[list[str]]:
    rows = []
    for task, metrics in tasks.items():
        for name, value in metrics.items():
            if "_stderr" in name:
                continue
            err = metrics.get(name.replace("/", "_stderr/", 1) if "/" in name else f"{name}_stderr")
            rows.append([task, name, f"{value:.4f}", "" if err is None else f"{err:.4f}"])
    return rows


def evaluate_run(args) -> dict[str, Any] | None:
    """Runs on every rank; returns the report on rank 0 (None elsewhere)."""
    from zoo_core.errors import UserError
    from zoo_core.loop.distributed import close_world, init_world
    from zoo_core.loop.evaluate import evaluate_splits, parse_splits
    from zoo_core.loop.runs import load_run
    from zoo_core.registry import get_registry

    world = init_world(args.device)
    try:
        run_ = load_run(args.run, device=world.device)
        report: dict[str, Any] = {
            "run": str(run_.path),
            "checkpoint": str(run_.checkpoint),
            "step": run_.step,
            "world_size": world.size,
        }
        if args.tasks is None or args.splits is not None:
            for name in ("batches", "batch_size", "seq_len"):
                if (getattr(args, name) or 0) < 0:
                    raise UserError(f"--{name.replace('_', '-')} must be positive")
            report["splits"] = evaluate_splits(
                run_.model,
                run_.cfg,
                get_registry(),
                run_.tokenizer,
                world,
                parse_splits(args.splits),
                n_batches=args.batches,
                batch_size=args.batch_size,
                seq_len=args.seq_len,
                progress=world.is_main and not args.quiet,
            )
        if args.tasks is not None:
            if world.size > 1:
                raise UserError("--tasks runs in one process; drop --nproc / torchrun for lm-eval tasks")
            from zoo_core.eval.lm_eval_adapter import run_tasks

            report["tasks"] = run_tasks(
                run_,
                args.tasks,
                include_path=args.include_path,
                limit=args.limit,
                num_fewshot=args.num_fewshot,
                batch_size=args.batch_size or 16,
                max_length=args.seq_len,
            )
        return report if world.is_main else None
    finally:
        close_world()


def show(report: dict[str, Any], json_path: str | None) -> None:
    from zoo_core.cli import table

    if json_path:
        text = json.dumps(report, indent=2)
        if json_path == "-":
            print(text)
            return  # stdout is for the script reading it
        Path(json_path).write_text(text + "\n")
    print(f"{report['run']} at step {report['step']} ({report['checkpoint']})")
    if report.get("splits"):
        print(table(split_rows(report["splits"]), ["split", "tokens", "loss", "ppl", "bits/byte", "accuracy"]))
    if report.get("tasks"):
        print(table(task_rows(report["tasks"]), ["task", "metric", "value", "stderr"]))


def to_argv(args) -> list[str]:
    """The options again, for the torchrun child."""
    argv = [args.run]
    for key in (
        "splits",
        "batches",
        "batch_size",
        "seq_len",
        "json",
        "tasks",
        "include_path",
        "limit",
        "num_fewshot",
        "device",
    ):
        value = getattr(args, key)
        if value not in (None, 0):
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv + (["--quiet"] if args.quiet else [])


def run(args) -> None:
    if args.nproc and args.nproc > 1:
        # The same evaluation under torchrun: each rank reads its share of the streams.
        from zoo_core.launch import run_torchrun, torchrun_command

        code = run_torchrun(torchrun_command(args.nproc, "zoo_core.commands.eval", to_argv(args)))
        if code:
            raise SystemExit(code)
        return
    report = evaluate_run(args)
    if report is not None:
        show(report, args.json)


def add_arguments(s) -> None:
    s.add_argument("run", help="a run directory (runs/<name>)")
    s.add_argument(
        "--splits",
        default=None,
        help="comma-separated: val, train, a named corpus (milton, shakespeare) or a path "
        "(default: val,milton; with --tasks: none)",
    )
    s.add_argument("--batches", type=int, default=0, help="windows per stream (default 0: one full pass)")
    s.add_argument("--batch-size", type=int, default=0, help="parallel streams (default: train.eval_batch_size)")
    s.add_argument("--seq-len", type=int, default=0, help="window length (default: data.seq_len)")
    s.add_argument("--json", default=None, help="also write the results as JSON to PATH (- for stdout only)")
    s.add_argument("--tasks", default=None, help="lm-eval-harness tasks, e.g. hellaswag,arc_easy (extra [eval])")
    s.add_argument("--include-path", default=None, help="a directory of extra lm-eval task YAML files")
    s.add_argument("--limit", type=float, default=None, help="lm-eval: documents per task (or a fraction)")
    s.add_argument("--num-fewshot", type=int, default=None, help="lm-eval: few-shot examples")
    s.add_argument("--device", default="auto")
    s.add_argument("--quiet", action="store_true", help="no progress bars while preparing splits")


def add_parser(sub) -> None:
    s = sub.add_parser("eval", help="loss, perplexity and bits/byte on val and extra splits; lm-eval tasks")
    add_arguments(s)
    s.add_argument("--nproc", type=int, default=0, help="processes on this machine (launches torchrun)")
    s.set_defaults(fn=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `python -m zoo_core.commands.eval` (what torchrun launches)."""
    import argparse

    from zoo_core.loop.guard import run_guarded

    parser = argparse.ArgumentParser(prog="zoo eval")
    add_arguments(parser)
    args = parser.parse_args(argv)

    def go() -> None:
        report = evaluate_run(args)
        if report is not None:
            show(report, args.json)

    return run_guarded(go)


if __name__ == "__main__":
    sys.exit(main())
