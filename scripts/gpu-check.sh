#!/usr/bin/env bash
# Everything a GPU machine should check, in one command: build with CUDA for the local GPU,
# run the CUDA test cases, run every CUDA operator under compute-sanitizer, and benchmark.
# Results (logs and the benchmark JSON) go to ${OUT:-gpu-check-results}.
#   usage: scripts/gpu-check.sh [ARCH]      e.g. scripts/gpu-check.sh 90   (H100 / H200)
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-90}"
out="${OUT:-gpu-check-results}"
mkdir -p "$out"

export ANOMALY_KERNELS_CUDA=ON ANOMALY_KERNELS_CUDA_ARCHS="$arch" PYTHONUNBUFFERED=1
python3 -m pip install -q --no-build-isolation --no-deps . 2>&1 | tee "$out/build.log" | tail -3
python3 -c "import anomaly_kernels, json; print(json.dumps(anomaly_kernels.build_info(), indent=1))" | tee "$out/build_info.json"

# The CUDA parametrisations of the operator and component tests (test files that need optional
# packages missing on the machine are skipped by name, not silently).
python3 -m pytest -q -p no:cacheprovider -k cuda tests/ops tests/components/test_k_center_greedy.py \
  tests/test_bench_and_cli.py 2>&1 | tee "$out/pytest-cuda.log" | tail -5

if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 3 python3 scripts/cuda_smoke.py 2>&1 | tee "$out/memcheck.log" | tail -25
else
  echo "compute-sanitizer not found: running the smoke test without it" | tee "$out/memcheck.log"
  python3 scripts/cuda_smoke.py 2>&1 | tee -a "$out/memcheck.log" | tail -25
fi

gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
python3 -m anomaly_kernels bench --device cuda --no-progress --output "$out/${gpu}-$(date +%F).json" 2>&1 | tee "$out/bench.log"
