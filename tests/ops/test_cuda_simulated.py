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
from conformance import (
    BORDERS, TABLE, band, clone_args, gaussians, result_tensors, sign_pattern, written_positions,
)
from cuda_sim.kernels import H100_LIKE, ONE_BLOCK, TURING_LIKE, late_copies, reverse_thread_order
from cuda_sim.operators import OPERATORS

SIMULATED = sorted(OPERATORS)


def test_every_operator_with_a_cuda_source_is_simulated():
    assert set(OPERATORS) == set(TABLE) - {"gaussian_fit"}


@pytest.mark.parametrize(
    "device", [H100_LIKE, TURING_LIKE, ONE_BLOCK], ids=["h100-like", "turing-like", "one-block"]
)
@pytest.mark.parametrize("name", SIMULATED)
def test_matches_reference(name, device):
    entry = TABLE[name]
    written = written_positions(name)
    for dtype in entry.dtypes_on("cuda"):
        for sample in entry.samples("cpu", dtype):
            args, ref_args = clone_args(sample.args), clone_args(sample.args)
            got = result_tensors(OPERATORS[name](*args, device=device))
            expected = result_tensors(entry.reference(*ref_args))
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
    written = written_positions(name)
    for dtype in entry.dtypes_on("cuda"):
        for sample in entry.samples("cpu", dtype):
            plain_args, other_args = clone_args(sample.args), clone_args(sample.args)
            plain = result_tensors(OPERATORS[name](*plain_args)) + [plain_args[i] for i in written]
            with contextlib.ExitStack() as stack:
                for setting in SCHEDULES[schedule]:
                    stack.enter_context(setting())
                other = result_tensors(OPERATORS[name](*other_args)) + [other_args[i] for i in written]
            for k, (a, b) in enumerate(zip(plain, other)):
                torch.testing.assert_close(
                    a, b, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{name} [{sample.label}] result {k}: {m}"
                )


# Random shapes near the kernels' tiling edges (tiles of 32 and 64, warps, partial last tiles),
# in float64 so that a rounding difference cannot hide or fake a mismatch, on a random device
# and schedule, against the CPU kernels (an independent implementation; the k-center ones on
# integer rows, exactly).
EDGES = (1, 2, 7, 31, 32, 33, 63, 64, 65, 97, 129)
DEVICES = (H100_LIKE, TURING_LIKE, ONE_BLOCK)


def _random_case(name: str, g: torch.Generator) -> tuple:
    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    def integers(*shape):
        return torch.randint(-20, 21, shape, generator=g).float()

    if name == "mahalanobis":
        b, c, h, w = pick((1, 3, 9, 17, 33, 65)), pick(EDGES + (200,)), pick((1, 2, 3)), pick((1, 2))
        embedding, mean, precision = gaussians(b, c, h, w, torch.float64, "cpu", seed=int(torch.randint(1000, (1,), generator=g)))
        if pick((False, True)):
            rows, columns = torch.triu_indices(c, c)
            precision = precision[:, rows, columns].contiguous()
        return embedding, mean, precision
    if name == "separable_blur2d":
        h, w, ky, kx = pick(EDGES), pick(EDGES), pick((1, 3, 8, 17, 33)), pick((1, 4, 9, 33))
        same = pick((True, False)) or ky > h or kx > w
        return randn(pick((1, 2)), pick((1, 3)), h, w), randn(ky).abs(), randn(kx).abs(), pick(BORDERS), same
    if name == "banded_resample2d":
        h, w = pick(EDGES), pick(EDGES)
        ly, lx = min(h, pick((1, 2, 6, 33))), min(w, pick((1, 3, 6, 33)))
        return (randn(pick((1, 2)), pick((1, 2)), h, w), *band(pick(EDGES + (224,)), h, ly, 1, torch.float64, "cpu"),
                *band(pick(EDGES + (224,)), w, lx, 2, torch.float64, "cpu"))
    if name == "kde_log_sum_exp":
        d = pick((1, 3, 16, 33))
        return randn(pick(EDGES), d), randn(pick(EDGES + (2049,)), d)
    if name == "sparse_sign_projection":
        d = pick(EDGES + (1537,))
        return (randn(pick(EDGES), d), *sign_pattern(pick((1, 7, 64, 303)), d, pick((0.05, 0.3, 1.0)), 3, "cpu"), 0.37)
    n, d = pick(EDGES + (513, 2049)), pick((1, 3, 4, 7, 8, 33, 304))
    features = integers(n, d)
    if name in ("kcenter_step_", "kcenter_step_to_"):
        center = torch.tensor(int(torch.randint(n, (1,), generator=g))) if name == "kcenter_step_" else integers(d)
        return features, torch.full((n,), float("inf")), center
    k = min(n, pick((1, 2, 9, 40)))
    centers = torch.randint(n, (k,), generator=g)
    return (features.to(pick((torch.float32, torch.bfloat16))), torch.full((n,), float("inf")),
            torch.full((n,), -1, dtype=torch.int32), centers, 0, k - 1 if k > 1 else 1, k > 1, pick((True, False)))


@pytest.mark.parametrize("name", SIMULATED)
def test_random_shapes_match_the_cpu_kernels(name):
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    written = written_positions(name)
    for case in range(8):
        args = _random_case(name, g)
        device = DEVICES[case % len(DEVICES)]
        settings = [(), (reverse_thread_order,), (late_copies,), (reverse_thread_order, late_copies)][case % 4]
        simulated_args, cpu_args = clone_args(args), clone_args(args)
        with contextlib.ExitStack() as stack:
            for setting in settings:
                stack.enter_context(setting())
            got = result_tensors(OPERATORS[name](*simulated_args, device=device)) + [simulated_args[i] for i in written]
        expected = result_tensors(getattr(torch.ops.anomaly_kernels, name)(*cpu_args)) + [cpu_args[i] for i in written]
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        for k, (a, b) in enumerate(zip(got, expected)):
            torch.testing.assert_close(
                a, b, rtol=1e-10, atol=1e-10, equal_nan=True, check_dtype=False,
                msg=lambda m: f"{name} case {case} {shapes} on {device}: result {k}: {m}",
            )
