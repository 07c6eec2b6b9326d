"""Runs code against the simulated kernels built with AddressSanitizer, in a child process.

The child preloads libasan (it must come before every other library) and libstdc++ and builds the library
with ``CUDA_SIM_ADDRESS_SANITIZER=1``; every read or write outside an allocation (a tensor,
a scratch buffer, a block's shared memory) then stops it with a report on stderr, as
compute-sanitizer's memcheck stops a GPU run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _runtime(name: str) -> str:
    path = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path):
        raise RuntimeError(f"g++ has no {name}: install the AddressSanitizer runtime of this g++")
    return path


def preload() -> str:
    """libasan first; libstdc++ right after it, so that AddressSanitizer finds the C++ runtime's
    exception functions when it starts (torch throws and catches C++ exceptions while it loads)."""
    return f"{_runtime('libasan.so')} {_runtime('libstdc++.so.6')}"


def run(code: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Runs `code` (Python, with tests/ and tests/ops on sys.path) under AddressSanitizer."""
    env = dict(
        os.environ,
        LD_PRELOAD=preload(),
        ASAN_OPTIONS="detect_leaks=0:halt_on_error=1",
        CUDA_SIM_ADDRESS_SANITIZER="1",
    )
    prologue = f"import sys\nsys.path[:0] = [{str(TESTS)!r}, {str(TESTS / 'ops')!r}]\n"
    return subprocess.run(
        [sys.executable, "-c", prologue + textwrap.dedent(code)],
        env=env, capture_output=True, text=True, timeout=timeout,
    )
