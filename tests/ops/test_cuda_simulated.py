"""The CUDA kernels of ``csrc/cuda``, run on the CPU by the simulation in ``tests/cuda_sim``.

Every conformance-table sample goes through each operator's CUDA launcher as its glue calls it
and must equal the reference within the entry's tolerances. Where the kernels' code paths change
with the device (shared memory, multiprocessors, resident blocks) the same samples run on a
second simulated device. The GPU runs of ``scripts/gpu-check.sh`` remain the measure of speed;
this measures correctness on every machine, CI included.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from conformance import TABLE
from cuda_sim.kernels import H100_LIKE, ONE_BLOCK, TURING_LIKE, late_copies, reverse_thread_order
from cuda_sim.operators import OPERATORS

SIMULATED = sorted(OPERATORS)


def _clone(args: tuple) -> tuple:
    return tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)


def _written(name: str) -> list:
    arguments = getattr(torch.ops.anomaly_kernels, name).default._schema.arguments
    return [i for i, a in enumerate(arguments) if a.alias_info is not None and a.alias_info.is_write]


def _as_list(result) -> list:
    if result is None:
        return []
    return [result] if isinstance(result, torch.Tensor) else list(result)


def test_every_operator_with_a_cuda_source_is_simulated():
    assert set(OPERATORS) == set(TABLE) - {"gaussian_fit"}


@pytest.mark.parametrize(
    "device", [H100_LIKE, TURING_LIKE, ONE_BLOCK], ids=["h100-like", "turing-like", "one-block"]
)
@pytest.mark.parametrize("name", SIMULATED)
def test_matches_reference(name, device):
    entry = TABLE[name]
    written = _written(name)
    for dtype in entry.dtypes_on("cuda"):
        for sample in entry.samples("cpu", dtype):
            args, ref_args = _clone(sample.args), _clone(sample.args)
            got = _as_list(OPERATORS[name](*args, device=device))
            expected = _as_list(entry.reference(*ref_args))
            got += [args[i] for i in written]
            expected += [ref_args[i] for i in written]
            assert len(got) == len(expected)
            for k, (a, b) in enumerate(zip(got, expected)):
                rtol, atol = entry.tolerances[b.dtype] if b.dtype.is_floating_point else (0.0, 0.0)
                torch.testing.assert_close(
                    a, b, rtol=rtol, atol=atol, equal_nan=True, check_stride=False,
                    msg=lambda m: f"{name} [{sample.label}] {dtype} result {k}: {m}",
                )
            for i, (arg, saved) in enumerate(zip(args, sample.args)):
                if isinstance(arg, torch.Tensor) and i not in written:
                    assert torch.equal(arg, saved), f"{name} [{sample.label}] modified argument {i}"


SCHEDULES = {
    "reverse order": (reverse_thread_order,),
    "late copies": (late_copies,),
    "reverse order, late copies": (reverse_thread_order, late_copies),
}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("name", SIMULATED)
def test_schedule_does_not_change_results(name, schedule):
    """Threads of a block run in turns between barriers, blocks one after another, and
    asynchronous copies land when issued: the results must stay the same bits when threads and
    blocks take their turns in reverse (a thread that reads what another wrote in the same
    barrier interval, a race on a GPU, then sees a different value) and when each copy lands
    only at the thread's wait for it (a stage read before its wait then holds stale or unwritten
    data)."""
    entry = TABLE[name]
    written = _written(name)
    for dtype in entry.dtypes_on("cuda"):
        for sample in entry.samples("cpu", dtype):
            plain_args, other_args = _clone(sample.args), _clone(sample.args)
            plain = _as_list(OPERATORS[name](*plain_args)) + [plain_args[i] for i in written]
            with contextlib.ExitStack() as stack:
                for setting in SCHEDULES[schedule]:
                    stack.enter_context(setting())
                other = _as_list(OPERATORS[name](*other_args)) + [other_args[i] for i in written]
            for k, (a, b) in enumerate(zip(plain, other)):
                torch.testing.assert_close(
                    a, b, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{name} [{sample.label}] result {k}: {m}"
                )
