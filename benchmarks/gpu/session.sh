#!/usr/bin/env bash
# One call of the device tool on a bare GPU machine: install, then run the named steps.
#
#   bash benchmarks/gpu/session.sh tests tune bench peers-a peers-b
#   bash benchmarks/gpu/session.sh ssd-tests ssd peers-mamba2     # the Mamba-2 / Triton SSD table
#   bash benchmarks/gpu/session.sh attn-1b                        # attention's MFU at ~1B, eager and compiled
#
# The machine has torch, triton, transformers and pytest-benchmark but no omegaconf and
# no network: carry the pure-Python wheels in .whl/ (see benchmarks/gpu/README.md).
# zoo's own packages are installed from this tree. Results go to $OUT (the tool
# brings them back); copy them into benchmarks/results/ by hand.
set -uo pipefail
OUT=${OUT:-/tmp/zoo-gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site \
    . ./kernels ./plugins/*/ >/dev/null 2>&1 || { echo "installing zoo failed"; exit 1; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"

for step in "$@"; do
    echo "=== $step $(date +%T)"
    case $step in
        tests|tests=*)  # the kernels on the GPU: real compiled Triton, lengths over several tiles
            what=kernels/tests; [[ $step == tests=* ]] && what=${step#tests=}
            timeout 180 python3 -m pytest -q -p no:cacheprovider ${what//,/ } 2>&1 | tee "$OUT/tests.log" | tail -15 ;;
        tune)
            timeout 240 python3 benchmarks/kernels/tune_triton.py 2>&1 | tee "$OUT/tune.txt" | tail -14 ;;
        bench|bench=*)  # bench=EXPR: only the cases pytest's -k EXPR selects
            sel=(); [[ $step == bench=* ]] && sel=(-k "${step#bench=}")
            timeout 420 python3 -m pytest -q -p no:cacheprovider benchmarks/kernels --benchmark-only "${sel[@]}" \
                --ignore=benchmarks/kernels/test_ssd_benchmarks.py \
                --benchmark-json="$OUT/kernels.json" >"$OUT/bench.log" 2>&1; tail -3 "$OUT/bench.log"
            python3 benchmarks/kernels/report.py "$OUT/kernels.json" >"$OUT/kernels.md" && grep -E "triton|^machine" "$OUT/kernels.md" | head -40 ;;
        ssd-tests)  # the Triton SSD compiled for the GPU against the loop, and Mamba-2's dispatch to it
            timeout 300 python3 -m pytest -q -p no:cacheprovider kernels/tests/test_ssd_triton.py \
                kernels/tests/test_ssd_chunked.py plugins/mamba/tests/test_ssd_triton_dispatch.py 2>&1 \
                | tee "$OUT/ssd-tests.log" | tail -15 ;;
        ssd|ssd=*)  # the SSD microbenchmark: triton vs torch-chunked (vs mamba-ssm where it imports)
            sel=(); [[ $step == ssd=* ]] && sel=(-k "${step#ssd=}")
            timeout 360 python3 -m pytest -q -p no:cacheprovider benchmarks/kernels/test_ssd_benchmarks.py \
                --benchmark-only "${sel[@]}" --benchmark-json="$OUT/ssd.json" >"$OUT/ssd-bench.log" 2>&1
            tail -3 "$OUT/ssd-bench.log"
            python3 benchmarks/kernels/report.py "$OUT/ssd.json" | tee "$OUT/ssd.md" ;;
        attn-1b)  # zoo attention (and HF Llama) at ~1.0B, eager and torch.compile: the MFU row
            timeout 560 python3 benchmarks/peers/gpu_step.py --shape 1b --rows attention --zoo-modes eager compiled \
                --timeout "${PEER_TIMEOUT:-240}" --out "$OUT/peers-train-gpu-1b.md" 2>&1 | tail -30 ;;
        peers-*)  # a subset of rows per call: the whole table takes longer than one call may run
            rows=${step#peers-}
            timeout 540 python3 benchmarks/peers/gpu_step.py --append --timeout "${PEER_TIMEOUT:-300}" \
                --rows ${rows//,/ } 2>&1 | tail -30
            cp benchmarks/results/peers-train-gpu-* "$OUT/" ;;
        *) echo "unknown step $step" ;;
    esac
done
