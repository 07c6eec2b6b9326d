"""The package's CUDA kernels compiled as plain C++ and run on the CPU, thread by thread.

A machine without a GPU still runs every CUDA kernel of ``csrc/cuda`` here: ``translate``
rewrites the few constructs C++ has no word for (launches, ``__shared__`` declarations), the
headers under ``include/`` stand in for the CUDA runtime, and each CUDA thread runs as a fiber
that stops at barriers (``include/cuda_sim/scheduler.h``). ``build.load()`` compiles the kernels
with their launchers into one shared library and returns it for ``ctypes``.

What the simulation checks: results against the reference, launch configurations (block and
grid sizes, dynamic shared memory against the opt-in), barriers that some threads never reach,
writes past a block's dynamic shared memory, reads of shared memory never written (it starts as
NaN). What it cannot: speed, and races between threads (a fiber runs alone between barriers).
"""
