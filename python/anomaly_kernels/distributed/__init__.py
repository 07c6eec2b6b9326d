"""Work split across processes with torch.distributed (gloo on CPUs, NCCL on GPUs).

:func:`sharded_k_center_greedy` and :func:`distributed_coreset` select a coreset from a memory
bank whose rows are spread over the ranks of a process group, with the same result as one
process holding all rows.
"""

from anomaly_kernels.distributed.coreset import distributed_coreset, sharded_k_center_greedy

__all__ = ["distributed_coreset", "sharded_k_center_greedy"]
