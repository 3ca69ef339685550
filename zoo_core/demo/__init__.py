"""`make demo`: train the default model on Shakespeare bytes, print bits/byte and a sample,
then a short equal-compute comparison of every installed architecture."""

import sys
import time
from pathlib import Path

from zoo_core.loop.guard import run_guarded
from zoo_core.loop.metrics import records
from zoo_core.loop.train import train_cli

DEMO = [
    "name=demo",
    "model.dim=128",
    "model.n_layers=4",
    "data.seq_len=128",
    "train.global_batch=32",
    "train.steps=800",
    "optim.lr=4e-3",
    "train.eval_every=200",
]
#: The shipped spec (zoo_core/compare/specs/demo.yaml, package data: there after pip install too).
SPEC = "demo"


def last_val_bpb(run_dir: str | Path) -> float | None:
    """The last validation bits/byte in a run's metrics.jsonl (None if it logged none)."""
    vals = records(run_dir, "val_bpb")
    return vals[-1]["val_bpb"] if vals else None


def train_demo(extra, start: float) -> float | None:
    """The demo's training run; returns its validation bits/byte. Run again when it has finished,
    the run is left as it is and its last logged bits/byte read back."""
    out = train_cli(None, DEMO + list(extra))  # a stop on a signal exits "preempted", resumable
    if out.get("finished"):  # `make demo` again: the run is kept as it is, its result read back
        bpb = last_val_bpb(out["run_dir"])
        print(
            f"demo: {out['run_dir']} was trained before ({out['step']} steps), validation bits/byte "
            + ("not logged" if bpb is None else f"{bpb:.3f}")
            + f"; to train it again from scratch, remove {out['run_dir']} first"
        )
        return bpb
    print(
        f"demo: trained {out['step']} steps in {time.perf_counter() - start:.0f} s, "
        f"validation bits/byte {out['val']['bpb']:.3f}"
    )
    return out["val"]["bpb"]


def demo(extra) -> None:
    start = time.perf_counter()
    train_demo(extra, start)
    from zoo_core.compare import load_spec, run_spec
    from zoo_core.registry import get_registry

    registry = get_registry()
    spec = load_spec(SPEC)
    # Compare what is installed: an architecture whose plugin is missing is left out, with a word.
    runnable = {}
    for arch, overrides in spec.architectures.items():
        names = [o.split("=", 1)[1] for o in overrides if o.startswith("model.mixer.name=")]
        if all(registry.has("mixers", n) for n in names) and all(
            registry.has("presets", o.split("=", 1)[1]) for o in overrides if o.startswith("model.preset=")
        ):
            runnable[arch] = overrides
        else:
            print(f"demo: skipping {arch}: its plugin is not installed")
    spec.architectures = runnable
    print(f"\ndemo: {len(runnable)} architectures at equal compute ({spec.budget_s:g} device-seconds each)")
    run_spec(spec, registry)
    print((Path(spec.runs_dir) / "results.md").read_text())
    print(f"demo: total {time.perf_counter() - start:.0f} s")


def main() -> int:
    return run_guarded(lambda: demo(sys.argv[1:]))
