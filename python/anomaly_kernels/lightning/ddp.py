"""What the one-pass models need from Lightning's DDP strategy, and what they must keep it from doing.

PatchCore, PaDiM and DFKDE have no trainable parameter. Lightning's ``DDPStrategy`` wraps the
module in ``torch.nn.parallel.DistributedDataParallel`` when fitting, and that wrapper exists
only to all-reduce gradients: torch refuses to build it for a module without a parameter that
requires a gradient ("DistributedDataParallel is not needed ..."). Lightning already skips the
wrapper for validate, test and predict ("there's no gradients to reduce") and broadcasts rank
0's parameters and buffers instead; :func:`fit_without_gradient_wrapper` makes fitting do the
same. Without the wrapper no collective runs per training step either (the wrapper would
broadcast every buffer, e.g. PaDiM's (P, C, C) precision matrices, before each forward pass).

The remaining helpers are the collectives the models' epoch-end fits use: the process group of
a multi-process trainer, a flag agreed by all ranks, a seed shared by all ranks, the module
state broadcast from rank 0, and metric states kept reduced over the ranks (torchmetrics
reduces states only while ``compute`` runs; normalisation statistics are read as states).
Tensors travel on the given device: the CPU under gloo, this rank's GPU under NCCL.

Metric states are CPU tensors at epoch end, and a group whose only backend is NCCL has no
backend for CPU tensors. :func:`cpu_capable_group` returns the trainer's group when its backend
configuration covers the CPU (gloo, MPI, UCC, ``"cpu:gloo,cuda:nccl"``) and otherwise a gloo
group of the same ranks, made once per group; :func:`metrics_synchronised_over` points
torchmetrics' synchronisation at it. Lightning refuses a sized loader that is empty on some
ranks unless ``allow_zero_length_dataloader_with_multiple_devices`` is set, and with it set it
skips every hook of that loop on those ranks, so collectives in the hooks no longer pair up;
:func:`refuse_skipped_hooks` turns that setting into a clear error.
"""

from __future__ import annotations

import datetime
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, Optional, Set, Tuple

import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from torch import nn
from torchmetrics import Metric

# The backend configuration that gives a GPU trainer's default group a CPU backend as well.
CPU_AND_GPU_BACKENDS = "cpu:gloo,cuda:nccl"

# Gloo groups made for groups without a CPU backend: id(group) -> (group, gloo group). The group
# itself is kept so that its id cannot be reused by another group while the entry exists.
_CPU_GROUPS: Dict[int, Tuple[dist.ProcessGroup, dist.ProcessGroup]] = {}


def trainer_process_group(trainer: Any) -> Optional[dist.ProcessGroup]:
    """The default process group when ``trainer`` runs on several processes, else ``None``.

    A trainer on one device returns ``None`` even inside an initialised process group (e.g. a
    separate single-device fit in each process), so that fit stays local.
    """
    if trainer is None or int(getattr(trainer, "world_size", 1)) <= 1:
        return None
    if not dist.is_available() or not dist.is_initialized():
        return None
    return dist.group.WORLD


def any_rank(flag: bool, group: dist.ProcessGroup, device: torch.device) -> bool:
    """Whether ``flag`` is true on at least one rank of ``group`` (the same answer on every rank)."""
    value = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
    return bool(value.item())


def shared_seed(group: dist.ProcessGroup, device: torch.device) -> int:
    """A seed drawn from rank 0's torch RNG and broadcast: the same on every rank.

    Every rank draws (so the ranks' RNG streams advance alike), rank 0's draw wins; seeding the
    processes (``seed_everything``) makes it reproducible.
    """
    seed = torch.randint(0, 2**62, (1,), dtype=torch.int64).to(device)
    dist.broadcast(seed, src=dist.get_global_rank(group, 0), group=group)
    return int(seed.item())


def broadcast_module_state(module: nn.Module, group: dist.ProcessGroup) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank 0's, in place.

    The DistributedDataParallel wrapper does this when it is built; a multi-process fit without
    it must too, or ranks whose modules were built differently (random backbone weights
    without a common seed under the ``ddp`` launcher) would extract different features. Every
    rank's tensors must already have rank 0's shapes (true for freshly built modules).
    """
    source = dist.get_global_rank(group, 0)
    for tensor in list(module.parameters()) + list(module.buffers()):
        data = tensor.data
        if data.dtype == torch.bool:
            # Collectives move numbers; bool buffers (e.g. "is fitted" flags) travel as bytes.
            staged = data.to(torch.uint8)
            dist.broadcast(staged, src=source, group=group)
            data.copy_(staged.bool())
        else:
            dist.broadcast(data, src=source, group=group)


def fit_without_gradient_wrapper(strategy: Any, module: nn.Module) -> bool:
    """Make a DDP ``strategy`` fit ``module`` unwrapped when no parameter of it requires a gradient.

    Lightning calls ``strategy.configure_ddp()`` while setting up a fit, after the module's
    ``setup`` hook and after moving it to its device; this replaces that call, for this strategy
    object only, by :func:`broadcast_module_state` over the default group. Modules with a
    trainable parameter, and other strategies, are left alone.

    Returns:
        Whether the strategy was changed.
    """
    if not isinstance(strategy, DDPStrategy) or any(parameter.requires_grad for parameter in module.parameters()):
        return False

    def configure_without_wrapper() -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            broadcast_module_state(strategy.lightning_module, dist.group.WORLD)

    strategy.configure_ddp = configure_without_wrapper
    return True


def keep_reduced_metric_states(metric: Metric, group: Optional[dist.ProcessGroup] = None) -> None:
    """Replace ``metric``'s states by their reduction over the ranks of ``group`` (its ``dist_reduce_fx``).

    ``Metric.compute`` reduces the states only while it computes and then restores the local
    ones; statistics that are read as states (the min-max and CDF normalisation statistics)
    need the reduced values kept. Every rank of the group must call it; a rank that never
    updated the metric contributes its defaults, the identity of the reduction (+inf for a
    minimum, -inf for a maximum, 0 for a sum). ``group`` ``None`` is the metric's own
    ``process_group`` (by default the whole world); its backend must take the states' device.
    """
    metric.sync(process_group=group, should_sync=True)
    reduced = {
        name: value.clone() if isinstance(value, torch.Tensor) else value for name, value in metric.metric_state.items()
    }
    metric.unsync()
    for name, value in reduced.items():
        setattr(metric, name, value)


def backend_device_types(group: dist.ProcessGroup) -> Set[str]:
    """Device types the backends of ``group`` take tensors of, e.g. ``{"cuda"}`` for NCCL alone.

    Read from ``torch.distributed.get_backend_config``, which lists ``device:backend`` pairs
    (``"cuda:nccl"``, ``"cpu:gloo,cuda:gloo"``, ``"cpu:gloo,cuda:nccl"``): unlike
    ``get_backend`` it also answers for mixed configurations and for backends other than NCCL
    that lack a CPU side.
    """
    config = dist.get_backend_config(group)
    return {entry.split(":", 1)[0].strip() for entry in config.split(",") if ":" in entry}


def group_timeout(group: dist.ProcessGroup) -> Optional[datetime.timedelta]:
    """How long collectives of ``group`` wait, or ``None`` when torch does not expose it.

    ``new_group`` does not inherit the timeout of the group it is made for (gloo groups default
    to 30 minutes); a group made in its place should give up as soon as the original would.
    """
    for device_type in sorted(backend_device_types(group)):
        try:
            timeout = group._get_backend(torch.device(device_type)).options._timeout
        except (AttributeError, RuntimeError, ValueError):
            continue
        if isinstance(timeout, datetime.timedelta):
            return timeout
    return None


def cpu_capable_group(group: dist.ProcessGroup) -> dist.ProcessGroup:
    """A process group of the same ranks as ``group`` that can synchronise CPU tensors.

    ``group`` itself when its backend configuration covers the CPU; otherwise (NCCL alone, as
    Lightning sets up for GPUs by default) a gloo group of its ranks, made on the first call
    and returned again by later ones, with ``group``'s timeout. The first call for a group
    without a CPU backend is collective (``torch.distributed.new_group``): every rank of the
    default group must make it at the same point, as Lightning's ``setup`` hooks do.

    Raises:
        RuntimeError: ``group`` has no CPU backend and this torch build has no gloo.
    """
    if "cpu" in backend_device_types(group):
        return group
    cached = _CPU_GROUPS.get(id(group))
    if cached is not None and cached[0] is group:
        return cached[1]
    if not dist.is_gloo_available():
        raise RuntimeError(
            f"the process group's backend ({dist.get_backend_config(group)!r}) cannot synchronise the CPU "
            "metric states of the epoch end, and this torch build has no gloo backend to add a group that "
            f"can: use a torch build with gloo and Trainer(strategy=DDPStrategy(process_group_backend="
            f'"{CPU_AND_GPU_BACKENDS}"))'
        )
    cpu_group = dist.new_group(
        ranks=dist.get_process_group_ranks(group), timeout=group_timeout(group), backend="gloo"
    )
    _CPU_GROUPS[id(group)] = (group, cpu_group)
    return cpu_group


@contextmanager
def metrics_synchronised_over(metrics: Iterable[Metric], group: dist.ProcessGroup) -> Iterator[None]:
    """Within the block, ``compute`` and ``sync`` of every metric in ``metrics`` reduce over ``group``.

    Each metric's ``process_group`` is restored afterwards, so no process group is kept in the
    metrics (process groups cannot be pickled or deep-copied with the module).
    """
    metrics = list(metrics)
    previous = [metric.process_group for metric in metrics]
    for metric in metrics:
        metric.process_group = group
    try:
        yield
    finally:
        for metric, process_group in zip(metrics, previous):
            metric.process_group = process_group


def refuse_skipped_hooks(trainer: Any, module: Any) -> None:
    """Raise when Lightning may skip a loop's hooks on some ranks of a multi-process ``trainer``.

    With ``allow_zero_length_dataloader_with_multiple_devices`` set on the module or the data
    module, a rank whose (sized) training, validation or test loader is empty skips the whole
    loop, hooks included, while the other ranks enter the collective fit and epoch-end
    reductions in those hooks: the ranks' collectives stop pairing up, and the run hangs or
    fails far from the cause. Without the setting Lightning refuses such loaders itself.
    Loaders without a length (an ``IterableDataset`` split by rank) run every hook on every
    rank, even one that gets no batch, and need no setting.

    Raises:
        ValueError: the setting is on.
    """
    owners = [("the module", module), ("the data module", getattr(trainer, "datamodule", None))]
    for owner, holder in owners:
        if holder is not None and getattr(holder, "allow_zero_length_dataloader_with_multiple_devices", False):
            raise ValueError(
                f"allow_zero_length_dataloader_with_multiple_devices is set on {owner}: Lightning then skips "
                "every hook of a loop on a rank whose sized loader is empty, and the collective fit and "
                "epoch-end reductions of the other ranks wait for it. Unset it and give every rank at least "
                "one batch (fewer processes, or a sampler that pads such as Lightning's DistributedSampler), "
                "or use a loader without a length (an IterableDataset split by rank), whose empty ranks "
                "still run every hook."
            )
