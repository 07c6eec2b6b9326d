"""The GPU check scripts work: the smoke test runs its comparisons on the CPU kernels here."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_cuda_smoke_script_passes_on_the_cpu_kernels():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cuda_smoke.py"), "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("24 passed, 0 failed")


def test_profile_script_runs_its_cases_on_the_cpu_kernels():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "profile_kernels.py"), "--device", "cpu", "--small"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("profiled:") == 8 and result.stdout.strip().endswith("8 cases")


def test_gpu_check_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu-check.sh")]).returncode == 0
