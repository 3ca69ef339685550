"""`make demo`: train the default model on Shakespeare bytes, print bits/byte and a sample."""
import sys

from zoo_core.cli import run_guarded
from zoo_core.train import train

DEMO = ["name=demo", "model.dim=128", "model.n_layers=4", "data.seq_len=128", "train.global_batch=32",
        "train.steps=800", "optim.lr=4e-3", "train.eval_every=200"]


def main() -> int:
    return run_guarded(lambda: train(None, DEMO + sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
