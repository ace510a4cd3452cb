#!/usr/bin/env bash
# The GPU checks of README "Speed" in one go, under 5 minutes on one H100/H200 (each step
# has its own time limit). Writes into $OUT (default: a new temporary folder, printed):
#   device.txt     the GPU, its memory and driver (nvidia-smi)
#   parity.txt     NumPy vs CuPy parity (tests/test_cupy_parity.py) and the layer/loss tests
#   bench.txt      python -m ffnumpy.bench on CuPy: SymBa, FF and backprop 2 x 500, an epoch
#                  and a prediction of the test set against the matmul bounds
#   whole-run.txt  the default 120-epoch SymBa MNIST run on CuPy: wall against the sum of
#                  its training epochs, start-up, evaluation and checkpointing
# Fused element-wise kernels and the side-by-side eager-framework script (issue 15, part 3)
# are not written yet: they need a GPU to be developed on.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$(mktemp -d -t ffnumpy-gpu-check-XXXXXX)}
py=${PYTHON:-python3}
mkdir -p "$out"
echo "writing to $out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
timeout 80 "$py" -m pytest -rs -q -p no:cacheprovider tests/test_cupy_parity.py \
    tests/test_losses.py tests/test_layers.py 2>&1 | tee "$out/parity.txt"
timeout 80 "$py" -m ffnumpy.bench --backend cupy --algo symba ff bp --repeats 5 2>&1 \
    | tee "$out/bench.txt"
timeout 120 "$py" -m ffnumpy.bench --whole-run --backend cupy --epochs 120 --repeats 1 2>&1 \
    | tee "$out/whole-run.txt"
