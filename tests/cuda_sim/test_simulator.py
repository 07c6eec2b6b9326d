"""The CUDA simulation itself: what it computes must match what a GPU computes, and the rules a
GPU enforces (launch limits, barriers, shared-memory bounds) must be reported, not ignored.
The kernels are in ``selftest_kernels.cu``."""

from __future__ import annotations

import ctypes

import pytest
import torch

from cuda_sim.build import load
from cuda_sim.kernels import H100_LIKE, TURING_LIKE, Device, late_copies, reverse_thread_order

INVALID_VALUE, INVALID_CONFIGURATION, LAUNCH_FAILURE, COOPERATIVE_TOO_LARGE = 1, 9, 719, 720


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _on(device: Device):
    lib = load()
    lib.sim_use_device(device.sms, device.smem_optin, device.blocks_per_sm)
    return lib


@pytest.fixture(autouse=True)
def no_error_left_behind():
    """Each test's failed launches are read back as they would be on a GPU: none stays pending
    for the kernels that the next tests launch."""
    yield
    assert load().sim_pending_error() == 0


@pytest.mark.parametrize("threads", [32, 96])
def test_shuffles_and_votes_follow_the_warp(threads):
    lib = _on(H100_LIKE)
    out = torch.full((threads, 3), -1, dtype=torch.int32)
    assert lib.selftest_warp_collectives(threads, _ptr(out)) == 0
    assert torch.equal(out[:, 0], torch.full_like(out[:, 0], 32 * 33 // 2))
    odd_lanes = sum(1 << k for k in range(1, 32, 2))
    assert (out[:, 1].to(torch.int64) & 0xFFFFFFFF).tolist() == [odd_lanes] * threads
    assert torch.equal(out[:, 2], torch.full_like(out[:, 2], 30))


def test_shuffle_from_a_lane_that_does_not_exist_is_reported():
    # 80 threads: the last warp has 16 lanes, and the butterfly's first step reads lanes 16-31.
    lib = _on(H100_LIKE)
    out = torch.zeros(80, 3, dtype=torch.int32)
    assert lib.selftest_warp_collectives(80, _ptr(out)) == LAUNCH_FAILURE
    assert b"does not take part" in lib.sim_last_failure()


def test_a_vote_counts_a_lane_that_returns_right_after_it():
    lib = _on(H100_LIKE)
    out = torch.zeros(32, dtype=torch.int64)
    assert lib.selftest_vote_then_return(_ptr(out)) == 0
    assert (out & 0xFFFFFFFF).tolist() == [0xFFFFFFFF] * 32


def test_barrier_orders_shared_memory_across_threads():
    lib = _on(H100_LIKE)
    x = torch.randn(3 * 256)
    out = torch.full_like(x, float("nan"))
    assert lib.selftest_reverse_block(3, 256, _ptr(x), _ptr(out)) == 0
    assert torch.equal(out, x.reshape(3, 256).flip(1).reshape(-1))


def test_a_race_shows_as_results_that_depend_on_the_thread_order():
    lib = _on(H100_LIKE)
    forward, backward = torch.full((64,), -1, dtype=torch.int32), torch.full((64,), -1, dtype=torch.int32)
    assert lib.selftest_racy_neighbour(_ptr(forward)) == 0
    with reverse_thread_order():
        assert lib.selftest_racy_neighbour(_ptr(backward)) == 0
    # In launch order thread t runs before t + 1 and finds its slot unwritten (all ones), except
    # the last, whose neighbour is thread 0; in reverse order it is the other way round.
    unwritten = torch.full((64,), -1, dtype=torch.int32)
    assert torch.equal(forward[:63], unwritten[:63]) and int(forward[63]) == 0
    assert torch.equal(backward[:63], torch.arange(1, 64, dtype=torch.int32)) and int(backward[63]) == -1


def test_late_copies_expose_a_stage_read_before_its_wait():
    lib = _on(H100_LIKE)
    x = torch.randn(32)
    expected = x.roll(-1)
    for wait in (True, False):
        eager, late = torch.zeros(32), torch.zeros(32)
        assert lib.selftest_staged_copy(_ptr(x), _ptr(eager), int(wait)) == 0
        with late_copies():
            assert lib.selftest_staged_copy(_ptr(x), _ptr(late), int(wait)) == 0
        assert torch.equal(eager, expected)  # copies that land at once hide the missing wait
        if wait:
            assert torch.equal(late, expected)
        else:
            # Copies land only when their thread ends: every read but the one after its
            # neighbour's end finds the stage unwritten.
            assert late.isnan().sum() == 31


def test_grid_barrier_waits_for_every_block():
    lib = _on(H100_LIKE)
    blocks = H100_LIKE.sms * H100_LIKE.blocks_per_sm
    counter, seen = torch.zeros(1, dtype=torch.int32), torch.zeros(blocks, dtype=torch.int32)
    assert lib.selftest_grid_total(blocks, _ptr(counter), _ptr(seen)) == 0
    assert seen.tolist() == [blocks * (blocks + 1) // 2] * blocks


def test_cooperative_grid_larger_than_the_device_is_refused():
    lib = _on(TURING_LIKE)
    too_many = TURING_LIKE.sms * TURING_LIKE.blocks_per_sm + 1
    counter, seen = torch.zeros(1, dtype=torch.int32), torch.zeros(too_many, dtype=torch.int32)
    assert lib.selftest_grid_total(too_many, _ptr(counter), _ptr(seen)) == COOPERATIVE_TOO_LARGE
    assert int(counter) == 0  # nothing ran


def test_grid_barrier_in_an_ordinary_launch_fails():
    lib = _on(H100_LIKE)
    counter, seen = torch.zeros(1, dtype=torch.int32), torch.zeros(2, dtype=torch.int32)
    assert lib.selftest_grid_sync_without_cooperative_launch(_ptr(counter), _ptr(seen)) == LAUNCH_FAILURE
    assert b"not launched cooperatively" in lib.sim_last_failure()


@pytest.mark.parametrize(
    "kernel,threads",
    [
        ("selftest_skipped_shuffle", 64),  # lane 0 waits at __syncthreads while the others shuffle
        ("selftest_grid_sync_without_a_leader", 2),  # a block's thread 0 returns before grid.sync()
    ],
)
def test_a_barrier_that_some_thread_never_reaches_is_a_deadlock(kernel, threads):
    lib = _on(H100_LIKE)
    out = torch.zeros(threads, dtype=torch.int32)
    assert getattr(lib, kernel)(_ptr(out)) == LAUNCH_FAILURE
    assert lib.sim_last_failure().startswith(b"deadlock")


def test_write_past_dynamic_shared_memory_is_reported():
    lib = _on(H100_LIKE)
    assert lib.selftest_shared_overflow(10) == LAUNCH_FAILURE
    assert b"past the end" in lib.sim_last_failure()


def test_unwritten_shared_memory_reads_as_nan():
    lib = _on(H100_LIKE)
    out = torch.zeros(32)
    assert lib.selftest_unwritten_shared(_ptr(out)) == 0
    assert out.isnan().all()


def test_launch_limits_are_those_of_a_gpu():
    lib = _on(TURING_LIKE)
    out = torch.zeros(2048)
    assert lib.selftest_uses_shared(2048, 4096, -1, _ptr(out)) == INVALID_CONFIGURATION  # > 1024 threads
    assert lib.selftest_uses_shared(32, 60 * 1024, -1, _ptr(out)) == INVALID_VALUE  # > 48 KB, not opted in
    assert lib.selftest_uses_shared(32, 60 * 1024, 60 * 1024, _ptr(out)) == 0
    assert torch.equal(out[:32], torch.ones(32))
    assert lib.selftest_uses_shared(32, 70 * 1024, 70 * 1024, _ptr(out)) == INVALID_VALUE  # above the device's opt-in
