"""Time the three paths of minGRU/minLSTM: scan (fast), step loop, naive loop.

    python plugins/mingru/benchmarks/bench_paths.py [--batch 4 --seq 256 --dim 64 --threads 1]

Forward + backward of one mixer, median over repeats (`zoo_core.testing.timing`).
"""

from zoo_core.testing.timing import bench_paths
from zoo_mingru import MinGRU, MinGRUConfig, MinLSTM, MinLSTMConfig
from zoo_mingru.reference import naive_min_rnn

if __name__ == "__main__":
    bench_paths(
        {
            "mingru": lambda dim: MinGRU(dim, MinGRUConfig()),
            "mingru conv4 linear": lambda dim: MinGRU(dim, MinGRUConfig(conv=4, log_space=False)),
            "minlstm": lambda dim: MinLSTM(dim, MinLSTMConfig()),
        },
        naive_min_rnn,
    )
