#!/usr/bin/env bash
# GPU checks in one go (a few minutes on one H100/H200): CuPy parity tests, the benchmark
# on both backends, and a full 120-epoch SymBa 2x500 MNIST run on the GPU.
# Output lands in ${OUT:-gpu_check_out}/ for the README.
set -uo pipefail
out=${OUT:-gpu_check_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
python -m pip install -q --no-index tqdm 2>/dev/null || true
python -m pytest -rs tests/test_cupy_parity.py tests/test_losses.py tests/test_layers.py 2>&1 | tee "$out/parity.txt"
python -m ffnumpy.bench --backend numpy cupy --algo symba ff bp --repeats 5 2>&1 | tee "$out/bench.txt"
/usr/bin/time -v python -m ffnumpy.train mnist --backend cupy --out "$out/run-symba-2x500" \
    --overwrite 2>&1 | grep -v "^ " | tee "$out/train.txt" | tail -5
cp "$out/run-symba-2x500/metrics.json" "$out/metrics-symba-2x500-cupy.json" 2>/dev/null
rm -rf "$out/run-symba-2x500"
