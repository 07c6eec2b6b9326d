"""Release artefacts: the sdist carries what a source build needs, the wheel scripts reject bad input.

The wheel itself (all CUDA architectures, about 10 minutes on 2 cores) and its check against
another torch are run by scripts/build-wheel.sh and scripts/check-wheel.sh, not here.
"""

import pathlib
import re
import subprocess
import sys
import tarfile
import tomllib

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
# What a build from the sdist reads besides the Python and C++ sources.
BUILD_INPUTS = ["pyproject.toml", "CMakeLists.txt", "README.md", "csrc/build_info.py.in", "csrc/module.c"]


def _source_files(folder: str) -> set[str]:
    """Files under ROOT/folder that belong in an sdist (no caches, no compiled objects)."""
    return {
        str(path.relative_to(ROOT))
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".so", ".pyc"}
    }


@pytest.fixture(scope="module")
def sdist_members(tmp_path_factory) -> tuple[str, set[str]]:
    """Build the sdist with README.md's command; return its top folder and its files below it."""
    out = tmp_path_factory.mktemp("sdist")
    # Run from the output folder: in the checkout, CMake's build/ folder would shadow the
    # `build` package as a namespace package.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300, cwd=out,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (archive,) = out.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        names = [member.name for member in tar.getmembers() if member.isfile()]
    top = {name.split("/", 1)[0] for name in names}
    assert len(top) == 1, f"expected one top-level folder, got {sorted(top)}"
    return top.pop(), {name.split("/", 1)[1] for name in names}


def test_sdist_is_named_after_the_project_version(sdist_members):
    top, _ = sdist_members
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert top == f"{project['name'].replace('-', '_')}-{project['version']}"


def test_sdist_holds_every_source_the_build_reads(sdist_members):
    _, files = sdist_members
    expected = _source_files("csrc") | _source_files("python") | set(BUILD_INPUTS)
    assert not expected - files, f"missing from the sdist: {sorted(expected - files)}"
    assert "PKG-INFO" in files


def test_sdist_has_no_build_outputs(sdist_members):
    _, files = sdist_members
    unwanted = [
        name for name in files
        if name.split("/", 1)[0] in {"build", "dist", ".venv", ".whl"}
        or name.endswith((".so", ".pyc", ".whl"))
        or "__pycache__" in name
    ]
    assert not unwanted, f"build outputs in the sdist: {unwanted[:10]}"


@pytest.mark.parametrize("script", ["build-wheel.sh", "check-wheel.sh"])
def test_wheel_scripts_are_valid_bash(script):
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)]).returncode == 0


def test_check_wheel_names_a_missing_wheel(tmp_path):
    missing = tmp_path / "anomaly_kernels-0.1.0-cp311-abi3-manylinux_2_34_x86_64.whl"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-wheel.sh"), str(missing)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "WHEEL" in result.stderr and str(missing) in result.stderr


def test_check_wheel_without_arguments_prints_usage():
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-wheel.sh")], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("usage: scripts/check-wheel.sh WHEEL")


def test_cpu_kernels_load_without_cuda_libraries():
    # The extension module links only libtorch_cpu and libc10, so it loads beside a CPU-only
    # torch; the CUDA kernels are a separate library loaded only beside a CUDA build of torch.
    import anomaly_kernels
    from anomaly_kernels import _C

    module = pathlib.Path(_C.__file__)
    needed = subprocess.run(["readelf", "-d", str(module)], capture_output=True, text=True, check=True).stdout
    assert "libtorch_cpu" in needed
    assert "libtorch_cuda" not in needed and "libcudart" not in needed
    info = anomaly_kernels.build_info()
    assert (module.parent / "_cuda_kernels.so").exists() == info["cuda_compiled"]
    if info["cuda_compiled"] and torch.version.cuda:
        assert info["cuda_registered"]


def test_strict_ptxas_sources_exist_and_ci_builds_with_them():
    """The files held free of local memory are named in CMakeLists.txt: a renamed or removed
    one would silently leave the guard, and CI must switch it on."""
    cmake = (ROOT / "CMakeLists.txt").read_text()
    listed = re.search(r"set\(STRICT_PTXAS_SOURCES([^)]*)\)", cmake)
    assert listed, "CMakeLists.txt no longer lists STRICT_PTXAS_SOURCES"
    sources = listed.group(1).split()
    assert sources and all((ROOT / source).is_file() for source in sources), sources
    assert all(source.endswith(".cu") for source in sources)
    assert "export ANOMALY_KERNELS_STRICT_PTXAS=ON" in (ROOT / ".ci/run").read_text()
    defines = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["scikit-build"]["cmake"]["define"]
    assert defines["ANOMALY_KERNELS_STRICT_PTXAS"]["env"] == "ANOMALY_KERNELS_STRICT_PTXAS"
