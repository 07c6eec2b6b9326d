"""Multi-process epoch ends that hold when a rank has no batch or the group has no CPU backend.

Lightning runs use the launcher and helpers of ``test_ddp_training`` (``ddp_spawn``, 2 processes,
gloo, a 60 s collective timeout, so a rank left waiting fails the run instead of hanging it).
A validation or test loader without a length (an iterable data set split by rank) is the loader
that Lightning lets leave a rank without any batch, with every hook still run there. NCCL cannot
run here: a callback makes the default group report NCCL's backend configuration to the
module and refuse every collective the module's epoch end would send through it. References:
scikit-learn (AUROC) and numpy (extremes and log moments of the one-process scores).
"""

from __future__ import annotations

import inspect
import os
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torchmetrics import Metric

from anomaly_kernels.lightning import ddp
from anomaly_kernels.lightning import one_pass_module
from anomaly_kernels.lightning.ddp import (
    backend_device_types,
    cpu_capable_group,
    keep_reduced_metric_states,
)
from anomaly_kernels.metrics import MinMax
from anomaly_kernels.models import PaDiM
from support.lightning_noise import DDP_NOISE
from support.toy_defects import SIZE
from test_ddp_training import (
    BACKBONE,
    BATCH_SIZE,
    NUM_TEST_PER_CLASS,
    TIMEOUT,
    WORLD,
    evaluation_set,
    loader,
    train_set,
    trainer,
)

pytestmark = DDP_NOISE

# Normalisation "cdf" fills both statistics (min-max and log moments); AUPRO adds region metrics.
OPTIONS = {**BACKBONE, "n_features": 40, "normalization": "cdf", "pixel_metrics": ("F1Score", "AUROC", "AUPRO")}
NUM_EVALUATION = 2 * NUM_TEST_PER_CLASS
METRIC_NAMES = {"image_F1Score", "image_AUROC", "pixel_F1Score", "pixel_AUROC", "pixel_AUPRO"}


class RankBlocks(IterableDataset):
    """Items ``[starts[r], starts[r + 1])`` of ``dataset`` on rank r; everything in one process.

    No ``__len__``: Lightning then runs the validation loop, hooks included, on every rank,
    however many batches each one gets.
    """

    def __init__(self, dataset: Dataset, starts: tuple[int, ...]) -> None:
        self.dataset = dataset
        self.starts = starts

    def __iter__(self):
        if dist.is_initialized() and dist.get_world_size() > 1:
            rank = dist.get_rank()
            indices = range(self.starts[rank], self.starts[rank + 1])
        else:
            indices = range(len(self.dataset))
        return (self.dataset[index] for index in indices)


def rank_loader(starts: tuple[int, ...]) -> DataLoader:
    return DataLoader(RankBlocks(evaluation_set(), starts), batch_size=BATCH_SIZE, num_workers=0)


def statistics_of(module: PaDiM) -> dict:
    """Thresholds, normalisation statistics and their states, as floats."""
    return {
        "image_threshold": float(module.image_threshold.value),
        "pixel_threshold": float(module.pixel_threshold.value),
        "min_max": (float(module.min_max.min), float(module.min_max.max)),
        **{name: float(value) for name, value in module.score_distribution.metric_state.items()},
    }


class RecordEpochEnd(pl.Callback):
    """Writes each rank's batches, statistics and logged metrics to ``<directory>/rank<r>.pt``.

    At the end of a fit (validation outputs) or of a test (test outputs).
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def record(self, trainer: pl.Trainer, module: PaDiM) -> dict:
        outputs = module.test_step_outputs if trainer.testing else module.validation_step_outputs
        return {
            "rank": trainer.global_rank,
            "batches": len(outputs),
            "statistics": statistics_of(module),
            "metrics": {name: float(value) for name, value in trainer.callback_metrics.items()},
        }

    def save(self, trainer, module) -> None:
        torch.save(self.record(trainer, module), os.path.join(self.directory, f"rank{trainer.global_rank}.pt"))

    on_fit_end = save
    on_test_end = save


COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "barrier", "broadcast")


class PretendNcclOnly(RecordEpochEnd):
    """Gives the default group NCCL's backend configuration ("cuda:nccl", no CPU) in every rank.

    ``setup`` runs before the module's, so the module sees the NCCL configuration when it
    prepares its epoch-end group. During the module's validation epoch end, collectives over
    the default group raise, as NCCL does for CPU tensors; the others are counted.
    """

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.counts = {"default group": 0, "other groups": 0}

    def setup(self, trainer, module, stage) -> None:
        world = dist.group.WORLD
        real_config = dist.get_backend_config
        dist.get_backend_config = lambda group=None: (
            "cuda:nccl" if group is None or group is world else real_config(group)
        )
        epoch_end = module.on_validation_epoch_end

        def guarded_epoch_end() -> None:
            originals = {name: getattr(dist, name) for name in COLLECTIVES}
            for name, original in originals.items():
                setattr(dist, name, self._refusing_default_group(name, original))
            try:
                epoch_end()
            finally:
                for name, original in originals.items():
                    setattr(dist, name, original)

        module.on_validation_epoch_end = guarded_epoch_end

    def _refusing_default_group(self, name: str, collective):
        signature = inspect.signature(collective)

        def guarded(*args, **kwargs):
            group = signature.bind(*args, **kwargs).arguments.get("group")
            if group is None or group is dist.group.WORLD:
                self.counts["default group"] += 1
                raise RuntimeError(f"simulated NCCL-only default group: {name} of CPU tensors")
            self.counts["other groups"] += 1
            return collective(*args, **kwargs)

        return guarded

    def record(self, trainer, module) -> dict:
        epoch_end_group = cpu_capable_group(dist.group.WORLD)  # made in setup: no new collective
        return {
            **super().record(trainer, module),
            "counts": dict(self.counts),
            "epoch_end_group": {
                "backend": dist.get_backend(epoch_end_group),
                "is_default": epoch_end_group is dist.group.WORLD,
                "ranks": dist.get_process_group_ranks(epoch_end_group),
            },
        }


def read_records(directory) -> list[dict]:
    records = [torch.load(os.path.join(directory, f"rank{rank}.pt")) for rank in range(WORLD)]
    assert [record["rank"] for record in records] == list(range(WORLD))
    return records


def ddp_records(directory, callback: RecordEpochEnd, starts: tuple[int, ...]) -> list[dict]:
    torch.manual_seed(0)
    trainer([callback], world=WORLD).fit(PaDiM(**OPTIONS), loader(train_set()), rank_loader(starts))
    return read_records(directory)


@pytest.fixture(scope="module")
def single_run():
    """The same PaDiM fitted and validated by one process, and numpy references from its scores."""
    torch.manual_seed(0)
    module = PaDiM(**OPTIONS)
    one_process = trainer()
    one_process.fit(module, loader(train_set()), loader(evaluation_set()))
    maps = module.model(evaluation_set().images).double().numpy()
    test_metrics = trainer().test(module, loader(evaluation_set()), verbose=False)[0]
    return {
        "module": module,
        "statistics": statistics_of(module),
        "metrics": {name: float(value) for name, value in one_process.callback_metrics.items()},
        "test_metrics": {name: float(value) for name, value in test_metrics.items()},
        "maps": maps,
        "scores": maps.reshape(len(maps), -1).max(axis=1),
    }


@pytest.fixture(scope="module")
def empty_rank_records(tmp_path_factory):
    """2 processes: rank 0 validates all 8 images (2 batches), rank 1 gets no validation batch."""
    directory = tmp_path_factory.mktemp("empty_rank")
    return ddp_records(directory, RecordEpochEnd(str(directory)), starts=(0, NUM_EVALUATION, NUM_EVALUATION))


@pytest.fixture(scope="module")
def nccl_only_records(tmp_path_factory):
    """2 processes whose default group looks NCCL-only to the module; 4 validation images each."""
    directory = tmp_path_factory.mktemp("nccl_only")
    return ddp_records(directory, PretendNcclOnly(str(directory)), starts=(0, NUM_TEST_PER_CLASS, NUM_EVALUATION))


@pytest.fixture(scope="module")
def empty_rank_test_records(tmp_path_factory, single_run):
    """2 processes test the one-process module: rank 0 gets all 8 images, rank 1 none."""
    directory = tmp_path_factory.mktemp("empty_rank_test")
    trainer([RecordEpochEnd(str(directory))], world=WORLD).test(
        single_run["module"], rank_loader((0, NUM_EVALUATION, NUM_EVALUATION)), verbose=False
    )
    return read_records(directory)


def assert_one_process_results(record: dict, single_run: dict, metrics: str = "metrics") -> None:
    assert record["metrics"].keys() == single_run[metrics].keys() == METRIC_NAMES
    for name, value in single_run[metrics].items():
        assert record["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    for name, value in single_run["statistics"].items():
        assert record["statistics"][name] == pytest.approx(value, rel=1e-5), name


def test_one_process_references_hold(single_run):
    """The one-process run the DDP runs are compared with agrees with numpy and scikit-learn."""
    statistics, maps, scores = single_run["statistics"], single_run["maps"], single_run["scores"]
    labels = evaluation_set().labels.numpy()
    assert single_run["metrics"]["image_AUROC"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert statistics["min_max"] == pytest.approx((maps.min(), maps.max()), rel=1e-5)
    assert statistics["image_count"] == NUM_EVALUATION and statistics["pixel_count"] == NUM_EVALUATION * SIZE * SIZE
    assert statistics["image_sum"] == pytest.approx(np.log(scores).sum(), rel=1e-5)
    assert statistics["pixel_sum_squares"] == pytest.approx((np.log(maps) ** 2).sum(), rel=1e-5)
    assert np.isclose(scores, statistics["image_threshold"], rtol=1e-6).any()  # a collected score


def test_a_rank_without_validation_batch_gets_the_one_process_results(empty_rank_records, single_run):
    assert [record["batches"] for record in empty_rank_records] == [NUM_EVALUATION // BATCH_SIZE, 0]
    for record in empty_rank_records:
        # Rank 1 computed nothing locally, yet holds (and logged) everything rank 0 saw.
        assert_one_process_results(record, single_run)


def test_a_rank_without_test_batch_gets_the_one_process_test_metrics(empty_rank_test_records, single_run):
    assert [record["batches"] for record in empty_rank_test_records] == [NUM_EVALUATION // BATCH_SIZE, 0]
    for record in empty_rank_test_records:
        assert_one_process_results(record, single_run, metrics="test_metrics")


def test_an_nccl_only_group_synchronises_the_epoch_end_over_a_gloo_group(nccl_only_records, single_run):
    for record in nccl_only_records:
        assert record["batches"] == NUM_TEST_PER_CLASS // BATCH_SIZE
        assert record["epoch_end_group"] == {"backend": "gloo", "is_default": False, "ranks": list(range(WORLD))}
        assert record["counts"]["default group"] == 0 and record["counts"]["other groups"] > 0
        assert_one_process_results(record, single_run)


# ------------------------------------------------------------------------------------------
# The epoch-end group in one process (a gloo group of one rank; backend lookups patched)
# ------------------------------------------------------------------------------------------
@pytest.fixture
def one_rank_group(tmp_path):
    store = f"file://{tmp_path / 'store'}"
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1, timeout=TIMEOUT)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def pretend_backend(monkeypatch, group, config: str) -> None:
    real_config = dist.get_backend_config

    def backend_config(g=None) -> str:
        return config if g is None or g is group else real_config(g)

    monkeypatch.setattr(dist, "get_backend_config", backend_config)


def count_new_groups(monkeypatch) -> list:
    made, real_new_group = [], dist.new_group

    def new_group(*args, **kwargs):
        made.append(kwargs)
        return real_new_group(*args, **kwargs)

    monkeypatch.setattr(dist, "new_group", new_group)
    return made


@pytest.mark.parametrize(
    ("config", "devices"),
    [("cuda:nccl", {"cuda"}), ("cpu:gloo,cuda:nccl", {"cpu", "cuda"}), ("cpu:gloo,cuda:gloo", {"cpu", "cuda"})],
)
def test_backend_device_types_reads_the_backend_configuration(monkeypatch, config, devices):
    group = object()
    monkeypatch.setattr(dist, "get_backend_config", lambda g=None: config if g is group else "unexpected")
    assert backend_device_types(group) == devices


@pytest.mark.parametrize("config", [None, "cpu:gloo,cuda:nccl"])
def test_a_group_with_a_cpu_backend_is_used_as_it_is(monkeypatch, one_rank_group, config):
    if config is not None:
        pretend_backend(monkeypatch, one_rank_group, config)
    made = count_new_groups(monkeypatch)
    assert cpu_capable_group(one_rank_group) is one_rank_group
    assert made == []


def test_an_nccl_only_group_gets_one_gloo_group_with_its_timeout(monkeypatch, one_rank_group):
    pretend_backend(monkeypatch, one_rank_group, "cuda:nccl")
    made = count_new_groups(monkeypatch)
    epoch_end_group = cpu_capable_group(one_rank_group)
    assert epoch_end_group is not one_rank_group
    assert dist.get_backend(epoch_end_group) == "gloo"
    assert dist.get_process_group_ranks(epoch_end_group) == [0]
    assert cpu_capable_group(one_rank_group) is epoch_end_group  # made once
    assert len(made) == 1 and made[0]["backend"] == "gloo" and made[0]["timeout"] == TIMEOUT
    # Metric states reduce over it (one rank: the identity).
    extremes = MinMax()
    extremes.update(torch.tensor([2.0, -1.0]))
    keep_reduced_metric_states(extremes, epoch_end_group)
    assert (float(extremes.min), float(extremes.max)) == (-1.0, 2.0)


def test_an_nccl_only_group_without_gloo_is_an_error_naming_the_fix(monkeypatch, one_rank_group):
    pretend_backend(monkeypatch, one_rank_group, "cuda:nccl")
    monkeypatch.setattr(dist, "is_gloo_available", lambda: False)
    with pytest.raises(RuntimeError, match='process_group_backend="cpu:gloo,cuda:nccl"'):
        cpu_capable_group(one_rank_group)


def test_metrics_synchronise_over_the_given_group_only_inside_the_block():
    metrics: list[Metric] = [MinMax(), MinMax(process_group="previous")]
    with ddp.metrics_synchronised_over(metrics, "epoch-end group"):
        assert [metric.process_group for metric in metrics] == ["epoch-end group"] * 2
    assert [metric.process_group for metric in metrics] == [None, "previous"]


# ------------------------------------------------------------------------------------------
# Module setup under several processes (the trainer's group patched in)
# ------------------------------------------------------------------------------------------
def setup_under_two_processes(monkeypatch, module: PaDiM, datamodule=None) -> list:
    group, prepared = object(), []
    monkeypatch.setattr(one_pass_module, "trainer_process_group", lambda trainer: group)
    monkeypatch.setattr(one_pass_module, "cpu_capable_group", lambda g: prepared.append(g))
    module._trainer = SimpleNamespace(strategy=None, datamodule=datamodule, world_size=WORLD)
    try:
        module.setup("validate")
    finally:
        module._trainer = None
    assert prepared in ([], [group])
    return prepared


def test_setup_prepares_the_epoch_end_group_under_several_processes(monkeypatch):
    assert setup_under_two_processes(monkeypatch, PaDiM(**OPTIONS)) != []


@pytest.mark.parametrize("owner", ["module", "datamodule"])
def test_setup_refuses_lightning_skipping_the_hooks_of_an_empty_rank(monkeypatch, owner):
    module = PaDiM(**OPTIONS)
    datamodule = SimpleNamespace(allow_zero_length_dataloader_with_multiple_devices=owner == "datamodule")
    module.allow_zero_length_dataloader_with_multiple_devices = owner == "module"
    with pytest.raises(ValueError, match="allow_zero_length_dataloader_with_multiple_devices"):
        setup_under_two_processes(monkeypatch, module, datamodule)
