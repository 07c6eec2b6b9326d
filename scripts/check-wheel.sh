#!/usr/bin/env bash
# Install a built wheel into a fresh virtual environment beside another torch than the one it was
# built against, and run this checkout's CPU test suite against the installed copy.
#
#   usage: scripts/check-wheel.sh WHEEL [TORCH_REQUIREMENT] [PYTEST ARGS...]
#   e.g.   scripts/check-wheel.sh dist/anomaly_kernels-0.1.0-cp311-abi3-manylinux_2_34_x86_64.whl
#          scripts/check-wheel.sh dist/anomaly_kernels-*.whl torch==2.12.0 tests/ops
#
# TORCH_REQUIREMENT defaults to torch==2.11.0, the oldest torch the stable ABI targets; PYTEST
# ARGS default to the whole suite and the installed package's doctests. The wheel's CUDA kernels
# are a library of their own, loaded only beside a CUDA build of torch: with a CPU-only torch the
# CPU kernels are checked alone (run tests that do not need timm there, e.g. tests/ops: PyPI's
# torchvision, which timm brings, does not load beside a CPU-only torch).
# About 10 minutes on 2 cores, most of it downloading and installing torch; the environment is
# deleted afterwards. The exit status is pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 1 ] || { echo "usage: scripts/check-wheel.sh WHEEL [TORCH_REQUIREMENT] [PYTEST ARGS...]" >&2; exit 2; }
wheel=$(realpath -m "$1")
torch_req="${2:-torch==2.11.0}"
shift $(( $# >= 2 ? 2 : 1 ))
[ -f "$wheel" ] || { echo "check-wheel: WHEEL: expected a .whl file, got '$wheel'" >&2; exit 2; }
if [ $# -eq 0 ]; then
  set -- --doctest-modules --pyargs anomaly_kernels tests
fi

env_dir=$(mktemp -d "${TMPDIR:-/tmp}/check-wheel.XXXXXX")
trap 'rm -rf "$env_dir"' EXIT
python3 -m venv "$env_dir"
py="$env_dir/bin/python"
export PIP_PROGRESS_BAR=off

started=$SECONDS
echo "+ pip install $torch_req $(basename "$wheel")[test]"
"$py" -m pip install -q "$torch_req" "$wheel[test]"
echo "installed in $((SECONDS - started)) s"

# Run from a folder outside the checkout so nothing but the installed wheel can be imported.
cd "$env_dir"
"$py" - "$wheel" <<'EOF'
import json, pathlib, sys, torch
import anomaly_kernels

installed = pathlib.Path(anomaly_kernels.__file__).resolve()
if not installed.is_relative_to(pathlib.Path(sys.prefix).resolve()):
    sys.exit(f"check-wheel: imported anomaly_kernels from {installed}, not from the new environment")
info = anomaly_kernels.build_info()
print(json.dumps({k: info[k] for k in (
    "torch_built_against", "torch_running", "cuda_compiled", "cuda_registered", "cuda_archs")}))
if not info["operators"]:
    sys.exit("check-wheel: the wheel registered no operator")
if info["cuda_compiled"] and torch.version.cuda and not info["cuda_registered"]:
    sys.exit("check-wheel: the wheel has CUDA kernels but they are not registered")
EOF
cd - >/dev/null

started=$SECONDS
# pyproject.toml's pytest settings still apply (rootdir, tests/ on sys.path for the helpers).
"$py" -m pytest -q -p no:cacheprovider "$@"
echo "tests took $((SECONDS - started)) s with $torch_req"
