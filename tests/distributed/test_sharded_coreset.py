"""Sharded k-center greedy over gloo process groups against the single-process selection."""

import datetime
import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from anomaly_kernels import ops
from anomaly_kernels.bench.cases import clustered_embedding
from anomaly_kernels.components.dimensionality_reduction import SparseRandomProjection
from anomaly_kernels.components.sampling import KCenterGreedy
from anomaly_kernels.components.search import nearest_neighbors
from anomaly_kernels.distributed import distributed_coreset, sharded_k_center_greedy, sharded_nearest_neighbors
from anomaly_kernels.distributed.nearest_neighbors import merge_candidates

TIMEOUT = datetime.timedelta(seconds=30)


def _single_process_selection(features: torch.Tensor, k: int, start: int) -> list:
    n = features.shape[0]
    centers = torch.zeros(k, dtype=torch.int64)
    centers[0] = start
    ops.kcenter_greedy_(features, torch.full((n,), float("inf")), torch.full((n,), -1, dtype=torch.int32), centers, 0, k - 1, True, False)
    return centers.tolist()


def _shards(n: int, world: int) -> list:
    # Uneven shards, one possibly empty, to exercise the global numbering.
    cuts = sorted({0, n} | {n * (r + 1) // (world + 1) for r in range(world - 1)})
    cuts = cuts + [n] * (world + 1 - len(cuts))
    return [(cuts[r], cuts[r + 1]) for r in range(world)]


def _embedding(task: str) -> torch.Tensor:
    # 256 columns exceed the projection's target (175 for 1200 rows), so "projected" projects.
    return clustered_embedding(1200, 256 if task == "projected" else 96, clusters=20, directions=4, seed=3)


def _few_distinct_rows() -> torch.Tensor:
    # 5 distinct rows, 8 copies each: a coreset of 20 has more slots than distinct rows.
    return torch.randn(5, 12, generator=torch.Generator().manual_seed(6)).repeat(8, 1)


def _queries() -> torch.Tensor:
    return torch.randn(30, 96, generator=torch.Generator().manual_seed(4)) * 4


def _worker(rank: int, world: int, store_dir: str, task: str, result_dir: str) -> None:
    torch.set_num_threads(1)
    outcome = "ok"
    try:
        dist.init_process_group("gloo", init_method=f"file://{store_dir}/rendezvous", rank=rank,
                                world_size=world, timeout=TIMEOUT)
        embedding = _embedding(task)
        first, last = _shards(embedding.shape[0], world)[rank]
        if task == "fail" and rank == world - 1:
            raise RuntimeError("simulated failure of the last rank")
        if task == "projected":
            few_first, few_last = _shards(40, world)[rank]
            result = (
                distributed_coreset(embedding[first:last], 0.05, seed=11, progress=False),
                distributed_coreset(_few_distinct_rows()[few_first:few_last], 0.5, seed=5, progress=False),
            )
        elif task == "nn":
            result = sharded_nearest_neighbors(_queries(), embedding[first:last], k=5)
        else:
            timings = {}
            result = sharded_k_center_greedy(embedding[first:last].contiguous(), 40, 17, progress=False, timings=timings)
            assert set(timings) == {"step", "communication"} and all(v > 0 for v in timings.values())
        torch.save(result, os.path.join(result_dir, f"rank{rank}.pt"))
    except Exception:  # recorded for the parent process, which asserts on it
        outcome = traceback.format_exc()
    finally:
        with open(os.path.join(result_dir, f"rank{rank}.status"), "w") as f:
            f.write(outcome)
        if dist.is_initialized():
            dist.destroy_process_group()


def _run(world: int, task: str, tmp_path) -> list:
    store_dir, result_dir = tmp_path / "store", tmp_path / "results"
    store_dir.mkdir(), result_dir.mkdir()
    context = mp.start_processes(_worker, args=(world, str(store_dir), task, str(result_dir)), nprocs=world,
                                 join=False, start_method="spawn")
    for process in context.processes:
        process.join(timeout=120)
        if process.is_alive():
            process.kill()
            pytest.fail(f"a rank of the {task} run did not finish within 120 s")
    return [(result_dir / f"rank{r}.status").read_text() for r in range(world)], result_dir


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_selection_equals_single_process(tmp_path, world):
    statuses, result_dir = _run(world, "plain", tmp_path)
    assert statuses == ["ok"] * world, statuses
    expected = _single_process_selection(_embedding("plain"), 40, 17)
    for r in range(world):
        assert torch.load(result_dir / f"rank{r}.pt") == expected


def test_distributed_coreset_projects_identically_on_every_rank(tmp_path):
    statuses, result_dir = _run(2, "projected", tmp_path)
    assert statuses == ["ok", "ok"], statuses
    embedding = _embedding("projected")
    projection = SparseRandomProjection(eps=0.9, random_state=11).fit(embedding)
    features = projection.transform(embedding)
    assert features.shape == (1200, 175)
    start = int(torch.randint(1200, (1,), generator=torch.Generator().manual_seed(11)))
    expected = _single_process_selection(features.float().contiguous(), 60, start)
    # Repeated picks (more slots than distinct rows) are replaced alike in one process and many.
    few = KCenterGreedy(_few_distinct_rows(), 0.5, seed=5).select_coreset_idxs()
    assert len(few) == 20 and len(set(few)) == 20
    assert {index % 5 for index in few[:5]} == set(range(5))  # one copy of each distinct row first
    for r in range(2):
        projected, few_distinct = torch.load(result_dir / f"rank{r}.pt")
        assert projected == expected
        assert few_distinct == few


def test_a_failing_rank_surfaces_as_an_error_not_a_hang(tmp_path):
    statuses, _ = _run(2, "fail", tmp_path)
    assert "simulated failure" in statuses[1]
    assert statuses[0] != "ok"  # the surviving rank raised (connection closed or timeout)


def test_sharded_nearest_neighbors_equal_the_whole_bank_search(tmp_path):
    statuses, result_dir = _run(3, "nn", tmp_path)
    assert statuses == ["ok"] * 3, statuses
    expected_distances, expected_indices = nearest_neighbors(_queries(), _embedding("nn"), k=5)
    for r in range(3):
        distances, indices = torch.load(result_dir / f"rank{r}.pt")
        assert torch.equal(indices, expected_indices)
        torch.testing.assert_close(distances, expected_distances)


def test_merge_keeps_the_k_best_with_ties_to_the_smaller_index():
    distances = torch.tensor([[3.0, 1.0, 2.0, 1.0, float("inf")]])
    indices = torch.tensor([[9, 7, 4, 2, 100]])
    best_distances, best_indices = merge_candidates(distances, indices, 3)
    assert best_indices.tolist() == [[2, 7, 4]] and best_distances.tolist() == [[1.0, 1.0, 2.0]]


def test_requires_an_initialised_process_group():
    with pytest.raises(RuntimeError, match="not initialised"):
        sharded_k_center_greedy(torch.randn(4, 2), 2, 0)


def test_distributed_benchmark_reports_times_and_identity():
    from anomaly_kernels.bench.distributed import format_records, run_distributed_benchmark

    records = run_distributed_benchmark([1, 2], rows=600, dims=8, coreset=12)
    assert [r["processes"] for r in records] == [1, 2]
    assert all(r["identical_to_single_process"] and r["seconds"] > 0 for r in records)
    assert all(0 <= r["communication_share"] <= 1 for r in records)
    table = format_records(records).splitlines()
    assert len(table) == 4 and table[2].split()[0] == "1" and table[3].split()[-1] == "yes"


@pytest.mark.skipif(not torch.cuda.is_available() or not dist.is_nccl_available(), reason="no CUDA device with NCCL")
def test_distributed_coreset_on_nccl_cuda_equals_the_seeded_one_process_coreset(tmp_path):
    # World size 1 on NCCL: the collective path of the GPU backend (all-reduce of packed keys,
    # broadcast of center rows) must give the one-process selection on the same device.
    embedding = torch.randn(20_000, 256, generator=torch.Generator().manual_seed(3)).cuda()
    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))
    try:
        sharded = distributed_coreset(embedding, 0.05, seed=7, progress=False)
    finally:
        dist.destroy_process_group()
    assert sharded == KCenterGreedy(embedding, 0.05, seed=7, progress=False).select_coreset_idxs()
