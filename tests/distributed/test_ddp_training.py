"""Multi-process (DDP, gloo, CPU) training of PaDiM and PatchCore against one-process references.

Lightning runs are launched with its own ``ddp_spawn`` (``DDPStrategy(start_method="spawn")``,
2 processes): the launcher pickles trainer, module and loaders into fresh processes, a rank that
raises makes the launcher stop the others and re-raise in the test process, and rank 0's fitted
state comes back into the test's module. What each rank ends with is written to files by a
callback. The references are numpy (Gaussians, greedy k-center) and scikit-learn (AUROC).
"""

from __future__ import annotations

import datetime
import os
import traceback

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pytorch_lightning.strategies import DDPStrategy
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, Dataset

from anomaly_kernels.components.dimensionality_reduction import SparseRandomProjection
from anomaly_kernels.components.sampling import KCenterGreedy
from anomaly_kernels.distributed import (
    ContiguousDistributedSampler,
    all_gather_rows,
    distributed_coreset,
    distributed_gaussian_fit,
    gather_selected_rows,
    seeded_coreset,
)
from support.lightning_noise import DDP_NOISE
from support.toy_defects import SIZE, SyntheticDefects

from anomaly_kernels.models import DFKDE, PaDiM, PatchCore

pytestmark = DDP_NOISE + [
    pytest.mark.filterwarnings("ignore:.*AUROC is undefined.*"),
    pytest.mark.filterwarnings("ignore:.*no `val_dataloader`.*"),
]

WORLD = 2
BATCH_SIZE = 4
# Every split divides by WORLD * BATCH_SIZE: no padded samples, whole batches on every rank.
NUM_TRAIN = 16
# PatchCore: 8 images = 2048 patches, few enough for the coreset's projection (188 < 192 dims).
NUM_TRAIN_PATCHCORE = 8
NUM_TEST_PER_CLASS = 4
TIMEOUT = datetime.timedelta(seconds=60)
BACKBONE = {"backbone": "resnet18", "layers": ("layer1", "layer2"), "pre_trained": False, "input_size": (SIZE, SIZE)}


def train_set(count: int = NUM_TRAIN) -> SyntheticDefects:
    return SyntheticDefects([0] * count, seed=0)


def evaluation_set() -> SyntheticDefects:
    return SyntheticDefects([0] * NUM_TEST_PER_CLASS + [1] * NUM_TEST_PER_CLASS, seed=1)


def loader(dataset: Dataset, contiguous: bool = False) -> DataLoader:
    sampler = ContiguousDistributedSampler(dataset) if contiguous else None
    return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=False, sampler=sampler, num_workers=0)


def trainer(callbacks: list = (), world: int = 1, **options) -> pl.Trainer:
    settings = {
        "max_epochs": 1,
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "callbacks": list(callbacks),
    }
    if world > 1:
        settings.update(
            devices=world,
            strategy=DDPStrategy(start_method="spawn", process_group_backend="gloo", timeout=TIMEOUT),
        )
    return pl.Trainer(**{**settings, **options})


class RecordRanks(pl.Callback):
    """Writes what every rank collected and ended with to ``<directory>/rank<r>.pt``.

    With ``checkpoint``, the fitted module is also saved there at the end of the fit, by
    rank 0 (``Trainer.save_checkpoint`` runs on every rank and writes on rank 0 only; Lightning's
    ModelCheckpoint skips fits without optimizer steps).
    """

    def __init__(self, directory: str, checkpoint: str | None = None) -> None:
        self.directory = directory
        self.checkpoint = checkpoint
        self.features = None

    def on_train_epoch_end(self, trainer, module) -> None:
        # Runs before the module's own hook, which fits and releases the features.
        self.features = torch.cat(module._training_features).clone()

    def on_fit_end(self, trainer, module) -> None:
        state = {
            name: value.clone() for name, value in module.model.state_dict().items() if "feature_extractor" not in name
        }
        record = {
            "rank": trainer.global_rank,
            "world": dist.get_world_size() if dist.is_initialized() else 1,
            "features": self.features,
            "state": state,
            "image_threshold": float(module.image_threshold.value),
            "min_max": (float(module.min_max.min), float(module.min_max.max)),
            "scores": {
                int(index): float(score)
                for output in module.validation_step_outputs
                for index, score in zip(output["index"], output["pred_scores"])
            },
        }
        torch.save(record, os.path.join(self.directory, f"rank{trainer.global_rank}.pt"))
        if self.checkpoint is not None:
            trainer.save_checkpoint(self.checkpoint)


class FailOnRank(pl.Callback):
    """Raises in one rank at the end of its training epoch, while the other rank enters the fit."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.global_rank == self.rank:
            raise RuntimeError(f"simulated failure of rank {self.rank}")


def read_ranks(directory) -> list[dict]:
    records = [torch.load(os.path.join(directory, f"rank{rank}.pt")) for rank in range(WORLD)]
    assert [record["rank"] for record in records] == list(range(WORLD))
    assert all(record["world"] == WORLD for record in records)
    return records


def numpy_gaussians(embeddings: np.ndarray, ridge: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Two-pass mean (C, P) and inverse covariance (P, C, C), numpy.cov semantics, float64."""
    n, c = embeddings.shape[:2]
    samples = embeddings.reshape(n, c, -1).astype(np.float64)
    mean = samples.mean(axis=0)
    covariances = [np.cov(samples[:, :, p], rowvar=False) + ridge * np.eye(c) for p in range(samples.shape[2])]
    inverses = np.stack([np.linalg.inv(covariance) for covariance in covariances])
    return mean, inverses


def numpy_greedy(features: np.ndarray, size: int, start: int) -> list[int]:
    """Greedy k-center in float64: add the row farthest from the chosen ones, ties to the smaller index."""
    chosen = [start]
    min_distances = np.full(features.shape[0], np.inf)
    while len(chosen) < size:
        min_distances = np.minimum(min_distances, np.linalg.norm(features - features[chosen[-1]], axis=1))
        chosen.append(int(np.argmax(min_distances)))
    return chosen


# ------------------------------------------------------------------------------------------
# PaDiM under DDP
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def padim_runs(tmp_path_factory):
    """The same PaDiM fitted with validation by 2 processes (Lightning's default sampler) and by one."""
    directory = tmp_path_factory.mktemp("padim")
    options = {**BACKBONE, "n_features": 40, "normalization": "min_max"}
    torch.manual_seed(0)
    ddp_module = PaDiM(**options)
    ddp_trainer = trainer([RecordRanks(str(directory), checkpoint=str(directory / "padim.ckpt"))], world=WORLD)
    ddp_trainer.fit(ddp_module, loader(train_set()), loader(evaluation_set()))
    torch.manual_seed(0)
    single_module = PaDiM(**options)
    single_trainer = trainer()
    single_trainer.fit(single_module, loader(train_set()), loader(evaluation_set()))
    return {
        "ranks": read_ranks(directory),
        "ddp_module": ddp_module,
        "ddp_metrics": {key: float(value) for key, value in ddp_trainer.callback_metrics.items()},
        "single_module": single_module,
        "single_metrics": {key: float(value) for key, value in single_trainer.callback_metrics.items()},
        "checkpoint": directory / "padim.ckpt",
    }


def test_ddp_padim_gaussians_equal_a_fit_on_all_training_images(padim_runs):
    single = padim_runs["single_module"].model
    # The backbones are identical (same seed), so the embeddings of all training images are too.
    embeddings = single.embed(train_set().images)
    mean, inverses = numpy_gaussians(embeddings.numpy())
    for record in padim_runs["ranks"]:
        # Each rank collected only its own half of the training images ...
        assert record["features"].shape[0] == NUM_TRAIN // WORLD
        ddp_mean, ddp_inverse = record["state"]["gaussian.mean"], record["state"]["gaussian.inv_covariance"]
        # ... and every rank holds the Gaussians of all of them.
        torch.testing.assert_close(ddp_mean, single.gaussian.mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ddp_inverse, single.gaussian.inv_covariance, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ddp_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ddp_inverse.numpy(), inverses, rtol=1e-4, atol=1e-4)
    # A fit on one rank's half alone is far from it: the reduction is what makes the two agree.
    _, half_inverses = numpy_gaussians(embeddings[: NUM_TRAIN // WORLD].numpy())
    assert np.abs(half_inverses - inverses).max() > 1e-2


def test_ddp_padim_thresholds_metrics_and_normalisation_cover_all_ranks(padim_runs):
    ranks, single = padim_runs["ranks"], padim_runs["single_module"]
    # Every rank scored its own half of the validation set.
    assert all(len(record["scores"]) == NUM_TEST_PER_CLASS for record in ranks)
    scores = {**ranks[0]["scores"], **ranks[1]["scores"]}
    assert sorted(scores) == list(range(2 * NUM_TEST_PER_CLASS))
    labels = evaluation_set().labels.numpy()
    ordered = np.array([scores[index] for index in range(len(labels))])
    single_scores = single.model(evaluation_set().images).flatten(1).amax(dim=1).numpy()
    np.testing.assert_allclose(ordered, single_scores, rtol=1e-5)
    # The image AUROC logged under DDP is the one of all validation images, not of rank 0's half.
    assert padim_runs["ddp_metrics"]["image_AUROC"] == pytest.approx(roc_auc_score(labels, ordered), abs=1e-6)
    for record in ranks:
        # Thresholds (synchronised metrics) and min-max statistics (reduced states) are global.
        assert record["image_threshold"] == pytest.approx(float(single.image_threshold.value), rel=1e-5)
        assert record["min_max"] == pytest.approx((float(single.min_max.min), float(single.min_max.max)), rel=1e-5)


def test_ddp_padim_checkpoint_scores_identically_on_one_process(padim_runs):
    loaded = PaDiM.load_from_checkpoint(padim_runs["checkpoint"])
    ddp_module = padim_runs["ddp_module"]  # holds rank 0's state, returned by the launcher
    assert torch.equal(loaded.model.gaussian.inv_covariance, padim_runs["ranks"][0]["state"]["gaussian.inv_covariance"])
    assert float(loaded.min_max.max) == padim_runs["ranks"][0]["min_max"][1]
    loaded_predictions = trainer().predict(loaded, loader(evaluation_set()))
    ddp_predictions = trainer().predict(ddp_module, loader(evaluation_set()))
    for loaded_batch, ddp_batch in zip(loaded_predictions, ddp_predictions):
        assert torch.equal(loaded_batch["pred_scores"], ddp_batch["pred_scores"])
        assert torch.equal(loaded_batch["anomaly_maps"], ddp_batch["anomaly_maps"])
    raw = loaded.model(evaluation_set().images).flatten(1).amax(dim=1)
    scores = {**padim_runs["ranks"][0]["scores"], **padim_runs["ranks"][1]["scores"]}
    torch.testing.assert_close(raw, torch.tensor([scores[index] for index in range(len(raw))]), rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------------------
# PatchCore under DDP
# ------------------------------------------------------------------------------------------
def test_ddp_patchcore_with_a_seed_keeps_the_one_process_memory_bank(tmp_path):
    seed, ratio = 7, 0.1
    options = {**BACKBONE, "coreset_sampling_ratio": ratio, "coreset_seed": seed}
    torch.manual_seed(0)
    ddp_module = PatchCore(**options)
    # Contiguous blocks without Lightning's sampler: rank order is data-set order.
    ddp_trainer = trainer([RecordRanks(str(tmp_path))], world=WORLD, use_distributed_sampler=False)
    ddp_trainer.fit(ddp_module, loader(train_set(NUM_TRAIN_PATCHCORE), contiguous=True))
    ranks = read_ranks(tmp_path)

    torch.manual_seed(0)
    single_module = PatchCore(**options)
    trainer().fit(single_module, loader(train_set(NUM_TRAIN_PATCHCORE)))
    single_bank = single_module.model.memory_bank

    # Independent reference: numpy greedy k-center on all rows in rank order, same projection and start.
    rows = torch.cat([record["features"] for record in ranks])
    patches = NUM_TRAIN_PATCHCORE * (SIZE // 4) ** 2
    assert rows.shape == (patches, 192) and ranks[0]["features"].shape[0] == patches // WORLD
    projection = SparseRandomProjection(eps=0.9, random_state=seed).fit(rows)
    assert projection.n_components < 192  # the projection is in play
    start = int(torch.randint(patches, (1,), generator=torch.Generator().manual_seed(seed)))
    expected = rows[numpy_greedy(projection.transform(rows).double().numpy(), int(patches * ratio), start)]
    for record in ranks:
        assert torch.equal(record["state"]["memory_bank"], expected)
    assert torch.equal(ddp_module.model.memory_bank, expected)
    assert torch.equal(single_bank, expected)


def test_ddp_dfkde_fits_on_every_ranks_features_gathered(tmp_path):
    """DFKDE has no reduction of its own: the default gathers all ranks' pooled features and fits them."""
    options = {"backbone": "resnet18", "pre_trained": False, "n_pca_components": 8}
    torch.manual_seed(0)
    ddp_trainer = trainer([RecordRanks(str(tmp_path))], world=WORLD, use_distributed_sampler=False)
    ddp_trainer.fit(DFKDE(**options), loader(train_set(), contiguous=True))
    ranks = read_ranks(tmp_path)
    torch.manual_seed(0)
    single = DFKDE(**options)
    trainer().fit(single, loader(train_set()))
    expected = {name: value for name, value in single.model.state_dict().items() if "feature_extractor" not in name}
    assert expected["kde_model.dataset"].shape[0] == NUM_TRAIN
    for record in ranks:
        assert record["features"].shape[0] == NUM_TRAIN // WORLD
        assert record["state"].keys() == expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(record["state"][name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_a_failing_rank_surfaces_in_the_launching_process(tmp_path):
    torch.manual_seed(0)
    module = PaDiM(**BACKBONE, n_features=40)
    with pytest.raises(Exception, match="simulated failure of rank 1"):
        trainer([FailOnRank(1)], world=WORLD).fit(module, loader(train_set()))
    assert not module.model.is_fitted


# ------------------------------------------------------------------------------------------
# The collectives without Lightning: uneven shards, one of them empty
# ------------------------------------------------------------------------------------------
SHARDS = [(0, 7), (7, 7), (7, 20)]  # rank 1 holds nothing


def _embeddings() -> torch.Tensor:
    # Features whose mean dwarfs their spread (1e4 vs 1): the one-pass moment formula
    # (Σxxᵀ − nμμᵀ) would lose about 8 of float64's 16 digits here, moments about μ keep them.
    generator = torch.Generator().manual_seed(5)
    return 1e4 + torch.randn(20, 3, 2, 3, generator=generator, dtype=torch.float64)


def _rows() -> torch.Tensor:
    return torch.randn(600, 256, generator=torch.Generator().manual_seed(6))


def _collective_worker(rank: int, world: int, store: str, results: str) -> None:
    torch.set_num_threads(1)
    outcome = "ok"
    try:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=TIMEOUT)
        first, last = SHARDS[rank]
        mean, precision = distributed_gaussian_fit(_embeddings()[first:last])
        _, packed = distributed_gaussian_fit(_embeddings()[first:last], packed=True, max_chunk_entries=1)
        gathered = all_gather_rows(_rows()[first:last] if last > first else None)
        indices = distributed_coreset(_rows()[first * 30 : last * 30], 0.05, seed=3)
        bank = gather_selected_rows(_rows()[first * 30 : last * 30], indices)
        try:
            distributed_gaussian_fit(_embeddings()[first:last] * (float("nan") if rank == 2 else 1.0))
            nan_error = "no error"
        except ValueError as error:
            nan_error = str(error)
        torch.save(
            {
                "mean": mean,
                "precision": precision,
                "packed": packed,
                "gathered": gathered,
                "indices": indices,
                "bank": bank,
                "nan_error": nan_error,
            },
            os.path.join(results, f"rank{rank}.pt"),
        )
    except Exception:  # recorded for the test process, which asserts on it
        outcome = traceback.format_exc()
    finally:
        with open(os.path.join(results, f"rank{rank}.status"), "w") as status:
            status.write(outcome)
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def collective_results(tmp_path_factory):
    directory = tmp_path_factory.mktemp("collectives")
    world = len(SHARDS)
    context = mp.start_processes(
        _collective_worker,
        args=(world, str(directory / "store"), str(directory)),
        nprocs=world,
        join=False,
        start_method="spawn"
    )
    for process in context.processes:
        process.join(timeout=120)
        if process.is_alive():
            process.kill()
            pytest.fail("a rank of the collective run did not finish within 120 s")
    statuses = [(directory / f"rank{rank}.status").read_text() for rank in range(world)]
    assert statuses == ["ok"] * world, statuses
    return [torch.load(directory / f"rank{rank}.pt") for rank in range(world)]


def test_distributed_gaussian_fit_equals_numpy_on_all_shards(collective_results):
    embeddings = _embeddings()
    mean, inverses = numpy_gaussians(embeddings.numpy())
    for result in collective_results:
        assert result["mean"].dtype == torch.float64 and result["precision"].shape == (6, 3, 3)
        np.testing.assert_allclose(result["mean"].numpy(), mean, rtol=1e-13)
        np.testing.assert_allclose(result["precision"].numpy(), inverses, rtol=1e-10)
        assert "NaN or infinite" in result["nan_error"]  # raised on every rank, not only rank 2


def test_distributed_gaussian_fit_packs_the_same_precisions_chunk_by_chunk(collective_results):
    rows, columns = torch.triu_indices(3, 3)
    for result in collective_results:
        assert result["packed"].shape == (6, 6)
        assert torch.equal(result["packed"], result["precision"][:, rows, columns])


def test_all_gather_rows_concatenates_in_rank_order(collective_results):
    for result in collective_results:
        assert torch.equal(result["gathered"], _rows()[:20])


def test_distributed_coreset_bank_equals_the_seeded_one_process_bank(collective_results):
    rows = _rows()
    expected = KCenterGreedy(rows, 0.05, seed=3).select_coreset_idxs()
    assert len(expected) == 30 and len(set(expected)) == 30
    assert seeded_coreset(rows, 0.05, seed=3) == expected
    projection = SparseRandomProjection(eps=0.9, random_state=3).fit(rows)
    start = int(torch.randint(600, (1,), generator=torch.Generator().manual_seed(3)))
    assert expected == numpy_greedy(projection.transform(rows).double().numpy(), 30, start)
    for result in collective_results:
        assert result["indices"] == expected
        assert torch.equal(result["bank"], rows[expected])


# ------------------------------------------------------------------------------------------
# One process
# ------------------------------------------------------------------------------------------
def test_contiguous_sampler_splits_without_repeats():
    blocks = [list(ContiguousDistributedSampler(10, num_replicas=3, rank=rank)) for rank in range(3)]
    assert blocks == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]  # ⌊r·10/3⌋ = 0, 3, 6, 10
    assert len(ContiguousDistributedSampler(list(range(5)))) == 5  # no process group: everything
    with pytest.raises(ValueError, match="rank"):
        ContiguousDistributedSampler(10, num_replicas=2, rank=2)
    with pytest.raises(TypeError, match="data_source"):
        ContiguousDistributedSampler(object())


def test_patchcore_coreset_seed_is_checked_and_saved():
    with pytest.raises(TypeError, match="coreset_seed"):
        PatchCore(**BACKBONE, coreset_seed=1.5)
    with pytest.raises(ValueError, match="coreset_seed"):
        PatchCore(**BACKBONE, coreset_seed=-1)
    assert PatchCore(**BACKBONE, coreset_seed=3).hparams["coreset_seed"] == 3


def test_seeded_subsample_is_reproducible_and_leaves_the_input_alone():
    torch.manual_seed(0)
    model = PatchCore(**BACKBONE, coreset_seed=4).model
    embedding = torch.randn(300, 192)
    copy = embedding.clone()
    model.subsample_embedding(embedding, 0.1, seed=4)
    first = model.memory_bank.clone()
    torch.manual_seed(123)  # the seeded choice does not read torch's global RNG
    model.subsample_embedding(embedding, 0.1, seed=4)
    assert torch.equal(model.memory_bank, first) and torch.equal(embedding, copy)
    assert torch.equal(first, embedding[seeded_coreset(embedding, 0.1, 4)])


def test_distributed_helpers_require_a_process_group():
    with pytest.raises(RuntimeError, match="not initialised"):
        distributed_gaussian_fit(torch.randn(3, 2, 2, 2))
    with pytest.raises(RuntimeError, match="not initialised"):
        all_gather_rows(torch.randn(3, 2))


def test_distributed_fits_check_shapes_before_communicating():
    torch.manual_seed(0)
    padim = PaDiM(**BACKBONE, n_features=40).model
    with pytest.raises(ValueError, match=r"local_embeddings must have shape \(n, 40, 16, 16\)"):
        padim.fit_distributed(torch.randn(2, 39, 16, 16))
    patchcore = PatchCore(**BACKBONE).model
    with pytest.raises(ValueError, match=r"local_embedding must have shape \(N, 192\)"):
        patchcore.subsample_embedding_distributed(torch.randn(5, 191), 0.5, seed=0)
