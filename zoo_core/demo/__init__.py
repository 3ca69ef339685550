"""`make demo`: train the default model on Shakespeare bytes, print bits/byte and a sample,
then a short equal-compute comparison of every installed architecture."""

import sys
import time
from pathlib import Path

from zoo_core.loop.guard import run_guarded
from zoo_core.loop.train import train

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


def demo(extra) -> None:
    start = time.perf_counter()
    out = train(None, DEMO + list(extra))
    print(
        f"demo: trained {out['step']} steps in {time.perf_counter() - start:.0f} s, "
        f"validation bits/byte {out['val']['bpb']:.3f}"
    )
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
