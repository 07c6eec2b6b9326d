"""Work split across processes with torch.distributed (gloo on CPUs, NCCL on GPUs).

:func:`sharded_k_center_greedy` and :func:`distributed_coreset` select a coreset from a memory
bank whose rows are spread over the ranks of a process group, with the same result as one
process holding all rows (:func:`seeded_coreset`, or ``KCenterGreedy(..., seed=seed)``, is that
one-process selection);
:func:`gather_selected_rows` then assembles the selected rows on every rank, and
:func:`all_gather_rows` every rank's rows. :func:`distributed_gaussian_fit` fits PaDiM's
per-position Gaussians from summed moments of embeddings spread over the ranks.
:func:`sharded_nearest_neighbors` searches a sharded bank (PatchCore scoring) with a local
top-k per rank and one global merge.

Multi-process training of the Lightning models (``Trainer(strategy="ddp" | "ddp_spawn")``):
:class:`ContiguousDistributedSampler` splits a data set over the ranks without the repeats of
Lightning's default sampler; what the models need from Lightning's strategy is in
:mod:`anomaly_kernels.lightning.ddp`, above this package (nothing here imports Lightning).
"""

from anomaly_kernels.distributed.coreset import distributed_coreset, seeded_coreset, sharded_k_center_greedy
from anomaly_kernels.distributed.gaussian_fit import distributed_gaussian_fit
from anomaly_kernels.distributed.nearest_neighbors import sharded_nearest_neighbors
from anomaly_kernels.distributed.row_gather import all_gather_rows, gather_selected_rows
from anomaly_kernels.distributed.sampler import ContiguousDistributedSampler

__all__ = [
    "ContiguousDistributedSampler",
    "all_gather_rows",
    "distributed_coreset",
    "distributed_gaussian_fit",
    "gather_selected_rows",
    "seeded_coreset",
    "sharded_k_center_greedy",
    "sharded_nearest_neighbors",
]
