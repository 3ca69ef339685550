#!/usr/bin/env bash
# Train-step tokens/s of Gated DeltaNet and DeltaNet against zoo's attention and mamba2, with
# `zoo throughput` (forward + backward + optimizer step), at seq 256 (8 sequences a step) and
# seq 2048 (1 sequence): 2048 tokens a step either way. dim 256, 4 layers, byte vocabulary,
# each mixer at its defaults. Rows go to $CSV (default: deltanet-train-step.csv).
#
#     bash plugins/deltanet/benchmarks/train_step.sh [threads]
set -euo pipefail
THREADS=${1:-2}
CSV=${CSV:-deltanet-train-step.csv}
ZOO=${ZOO:-zoo}
for seq_batch in "256 8" "2048 1"; do
  set -- $seq_batch
  for mixer in attention mamba2 gated_deltanet deltanet; do
    $ZOO throughput "model.mixer.name=$mixer" model.dim=256 model.n_layers=4 "data.seq_len=$1" \
      "train.global_batch=$2" "train.threads=$THREADS" --warmup 2 --repeats 3 --csv "$CSV" | tail -1
  done
done
