"""Time the three paths of Hawk: RG-LRU scan (fast), step loop, naive loop.

    python plugins/hawk/benchmarks/bench_paths.py [--batch 4 --seq 256 --dim 64 --threads 1]

Forward + backward of one mixer, median over repeats (`zoo_core.testing.timing`).
"""

from zoo_core.testing.timing import bench_paths
from zoo_hawk import Hawk, HawkConfig
from zoo_hawk.reference import naive_hawk

if __name__ == "__main__":
    bench_paths({"hawk": lambda dim: Hawk(dim, HawkConfig())}, naive_hawk)
