"""Compiles the CUDA kernels of ``csrc/cuda`` for the CPU simulation, once per content.

The library is cached under the system's temporary folder by a hash of every input (kernel
sources, shared headers, the simulation's headers and entry points, this file and the
translator), so a second test session loads it at once. It is built in a private folder and
renamed into place when complete, so concurrent test processes never load half a library.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cuda_sim.translate import translate

HERE = Path(__file__).resolve().parent
CSRC = HERE.parents[1] / "csrc"
FLAGS = ["-std=c++17", "-O1", "-g0", "-fPIC", "-fno-strict-aliasing", "-w"]
# Limits that only very large inputs reach on a GPU, lowered so that small simulated calls take
# those paths: the Mahalanobis centring in one launch per image group.
FLAGS += ["-DANOMALY_KERNELS_MAHALANOBIS_CENTRE_LAUNCH_ROWS=1"]
# With CUDA_SIM_ADDRESS_SANITIZER=1 in the environment the library is built with
# AddressSanitizer, and must be loaded into a process that has libasan preloaded
# (address_sanitizer.py runs such a process).
SANITIZER_FLAGS = ["-fsanitize=address", "-fno-omit-frame-pointer"]


def _flags() -> list:
    return FLAGS + (SANITIZER_FLAGS if os.environ.get("CUDA_SIM_ADDRESS_SANITIZER") == "1" else [])


def _inputs() -> list[Path]:
    files = _cuda_sources() + sorted((CSRC / "cuda").glob("*.cuh"))
    files += sorted((CSRC / "common").glob("*.h"))
    files += sorted(HERE.rglob("*.h")) + sorted(HERE.rglob("*.cuh")) + [HERE / "entry_points.cpp"]
    return files + [HERE / "build.py", HERE / "translate.py"]


def _cuda_sources() -> list[Path]:
    """The package's kernels and the simulation's own test kernels."""
    return sorted((CSRC / "cuda").glob("*.cu")) + sorted(HERE.glob("*.cu"))


def _digest() -> str:
    h = hashlib.sha256(" ".join(_flags()).encode())
    for path in _inputs():
        h.update(str(path.relative_to(HERE.parents[1])).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _run(command: list, what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} for the CUDA simulation failed:\n{result.stderr[-4000:]}")


def _compile(source: Path, obj: Path) -> None:
    command = ["g++", *_flags(), "-I", str(HERE / "include"), "-I", str(CSRC), "-c", str(source), "-o", str(obj)]
    _run(command, f"compiling {source.name}")


@functools.lru_cache(maxsize=None)
def load() -> ctypes.CDLL:
    """The simulated kernels' library (``entry_points.cpp`` lists its functions)."""
    cache = Path(tempfile.gettempdir()) / "anomaly_kernels_cuda_sim"
    library = cache / f"kernels-{_digest()}.so"
    if not library.exists():
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
        try:
            sources = []
            for cu in _cuda_sources():
                translated = work / f"{cu.stem}.cpp"
                translated.write_text(translate(cu.read_text(), str(cu.relative_to(HERE.parents[1]))))
                sources.append(translated)
            sources.append(HERE / "entry_points.cpp")
            objects = [work / f"{s.stem}.o" for s in sources]
            with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
                list(pool.map(_compile, sources, objects))
            linked = work / "kernels.so"
            _run(["g++", *_flags(), "-shared", "-o", str(linked), *map(str, objects)], "linking the kernels")
            os.replace(linked, library)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    lib = ctypes.CDLL(str(library))
    lib.sim_last_failure.restype = ctypes.c_char_p
    return lib
