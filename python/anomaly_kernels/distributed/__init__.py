"""Work split across processes with torch.distributed (gloo on CPUs, NCCL on GPUs).

:func:`sharded_k_center_greedy` and :func:`distributed_coreset` select a coreset from a memory
bank whose rows are spread over the ranks of a process group, with the same result as one
process holding all rows; :func:`sharded_nearest_neighbors` searches such a bank (PatchCore
scoring) with a local top-k per rank and one global merge.
"""

from anomaly_kernels.distributed.coreset import distributed_coreset, sharded_k_center_greedy
from anomaly_kernels.distributed.nearest_neighbors import sharded_nearest_neighbors

__all__ = ["distributed_coreset", "sharded_k_center_greedy", "sharded_nearest_neighbors"]
