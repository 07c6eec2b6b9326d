"""The DDP glue of the Lightning models, kept importable from its former place; it lives in :mod:`anomaly_kernels.lightning.ddp`."""

from anomaly_kernels.lightning.ddp import (
    CPU_AND_GPU_BACKENDS,
    any_rank,
    backend_device_types,
    broadcast_module_state,
    cpu_capable_group,
    fit_without_gradient_wrapper,
    group_timeout,
    keep_reduced_metric_states,
    metrics_synchronised_over,
    refuse_skipped_hooks,
    shared_seed,
    trainer_process_group,
)

__all__ = [
    "CPU_AND_GPU_BACKENDS",
    "any_rank",
    "backend_device_types",
    "broadcast_module_state",
    "cpu_capable_group",
    "fit_without_gradient_wrapper",
    "group_timeout",
    "keep_reduced_metric_states",
    "metrics_synchronised_over",
    "refuse_skipped_hooks",
    "shared_seed",
    "trainer_process_group",
]
