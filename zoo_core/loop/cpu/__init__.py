"""CPU helpers for the loop: oneDNN linear, GEMM peak, tuning cache, freed-memory retention."""
