#!/usr/bin/env bash
# Everything a GPU machine should check, in one command (under 8 minutes on an H100 / H200):
#   1. install: the newest wheel in dist/ when there is one (built elsewhere with
#      `ANOMALY_KERNELS_CUDA=ON pip wheel --no-build-isolation --no-deps . -w dist`), else build here;
#   2. every CUDA test case (kornia and other missing test packages come as wheels from .whl/,
#      installed into a scratch folder on PYTHONPATH), but not the tests of the CPU simulation of
#      the CUDA kernels (tests/cuda_sim), which every CI run makes;
#   3. `anomaly-kernels bench-gpu`: the kernels against the cuDNN / cuBLAS / eager forms;
#   4. every CUDA operator under compute-sanitizer memcheck and racecheck (scripts/cuda_smoke.py);
#   5. where Nsight Compute is installed, one profiled launch of each kernel at the target sizes
#      (scripts/profile_kernels.py; at most 100 s): why a kernel sits where it does.
# Logs and the benchmark JSON go to ${OUT:-gpu-check-results}. Each step runs even when an
# earlier one failed, so one call reports everything; the exit status is that of the first failure.
#   usage: scripts/gpu-check.sh [ARCH] [BENCH ARGS...]   e.g. scripts/gpu-check.sh 90 --quick
set -uo pipefail
cd "$(dirname "$0")/.."
arch="${1:-90}"
shift || true
out="${OUT:-gpu-check-results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0
failed() {  # failed STATUS: report, and keep the first failure's status for the exit
  echo "=== failed with status $1"
  [ "$status" -ne 0 ] || status=$1
}

install() {
  local wheel
  wheel=$(ls -t dist/anomaly_kernels-*.whl 2>/dev/null | head -1)  # the newest
  if [ -n "$wheel" ]; then
    python3 -m pip install -q --no-deps --force-reinstall "$wheel"
  else
    ANOMALY_KERNELS_CUDA=ON ANOMALY_KERNELS_CUDA_ARCHS="$arch" python3 -m pip install -q --no-build-isolation --no-deps .
  fi
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/ak-site .whl/*.whl
    export PYTHONPATH=/tmp/ak-site${PYTHONPATH:+:$PYTHONPATH}
  fi
  python3 -c "import anomaly_kernels, json; print(json.dumps(anomaly_kernels.build_info()))"
}
install 2>&1 | tee "$out/install.log" | tail -3 || failed $?
# The install ran in a pipeline's subshell: its PYTHONPATH is set here again.
if [ -d /tmp/ak-site ]; then export PYTHONPATH=/tmp/ak-site${PYTHONPATH:+:$PYTHONPATH}; fi

workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 12" || echo "")
python3 -m pytest -q -rs -p no:cacheprovider $workers -k "cuda and not simulat and not cuda_sim" tests 2>&1 | tee "$out/pytest-cuda.log" | tail -15 \
  || failed $?

echo "=== tests done at ${SECONDS} s"
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
python3 -m anomaly_kernels bench-gpu --output "$out/${gpu}-$(date +%F).json" "$@" 2>&1 | tee "$out/bench-gpu.log" \
  || failed $?
echo "=== benchmark done at ${SECONDS} s"

if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 3 python3 scripts/cuda_smoke.py 2>&1 \
    | tee "$out/memcheck.log" | tail -6 || failed $?
  # Shared-memory races in the double-buffered kernels (blur windows, projection slabs).
  timeout 120 compute-sanitizer --tool racecheck --error-exitcode 3 python3 scripts/cuda_smoke.py 2>&1 \
    | tee "$out/racecheck.log" | tail -3 || failed $?
else
  python3 scripts/cuda_smoke.py 2>&1 | tee "$out/memcheck.log" | tail -6 || failed $?
fi

echo "=== sanitizers done at ${SECONDS} s"
if command -v ncu >/dev/null; then
  timeout 100 ncu --clock-control none --profile-from-start off --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section MemoryWorkloadAnalysis --section WarpStateStats python3 scripts/profile_kernels.py \
    > "$out/ncu.log" 2>&1 || echo "=== the profile did not complete (status $?): a diagnosis, not a check"
  grep -E "profiled:|^  [a-z_]+.*\(|Duration|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy" \
    "$out/ncu.log" | head -80
fi
exit $status
