"""Quiet runs: Lightning's remarks that are not the user's concern, filtered one by one; bars on stderr.

The one-pass models have no optimiser, keep a frozen backbone in eval mode and train for one
epoch of a few batches; Lightning remarks on each of these on every run, and prints its
hardware summary, tips and loop-end notes as log records. Only those known remarks are
filtered: every other warning still reaches the user. In processes started by a DDP strategy
the filters are installed again by the :class:`QuietLightning` callback, since a spawned
process does not inherit the parent's filters.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from typing import Any, Iterator, List, Sequence

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

# Regular expressions of the warning messages that describe the intended setup.
EXPECTED_REMARKS = (
    r".*configure_optimizers.* returned .None",  # one-pass models have no optimiser
    r".*module\(s\) in eval mode",  # the frozen backbone stays in eval mode
    r".*does not have many workers",  # loaders read in the main process on purpose
    r".*number of training batches .* is smaller than the logging interval",  # no logger is used
    r".*sync_dist=True",  # the models synchronise their metrics themselves
    r".*LeafSpec.*is deprecated",  # raised inside torch's DDP machinery, not by this code
)
# Lightning's informational log lines ("GPU available: ...", tips, "`Trainer.fit` stopped").
# ("Initializing distributed: GLOBAL_RANK ..." comes from the last one.)
LIGHTNING_INFO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
    "lightning_fabric.utilities.distributed",
)
# The metrics' own warnings when validation or test images are all of one kind: a run that
# already told the user so in one line filters these repetitions (one per metric and stage).
ONE_CLASS_REMARKS = (r".*AUROC is undefined", r".*collected labels contain no (anomalous|normal) sample")


def _install_filters(extra: Sequence[str] = ()) -> None:
    for pattern in tuple(EXPECTED_REMARKS) + tuple(extra):
        warnings.filterwarnings("ignore", message=pattern)


@contextlib.contextmanager
def quiet_lightning(extra: Sequence[str] = ()) -> Iterator[None]:
    """Inside the block, Lightning's expected remarks and info lines (and ``extra`` warnings) are not shown."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_INFO_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        _install_filters(extra)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


class QuietLightning(pl.Callback):
    """Installs the filters of :func:`quiet_lightning` in every process of a run (DDP included)."""

    def __init__(self, extra: Sequence[str] = ()) -> None:
        self.extra = tuple(extra)

    def __setstate__(self, state: dict) -> None:
        # A process started by ddp_spawn unpickles the trainer, and this callback with it, before
        # it joins the process group: installing the filters now also quiets that stage.
        self.__dict__.update(state)
        self._install()

    def _install(self) -> None:
        _install_filters(self.extra)
        for name in LIGHTNING_INFO_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Other launchers start processes with default filters; the launching process keeps its own.
        self._install()


class StderrProgressBar(TQDMProgressBar):
    """Lightning's progress bars, written to stderr so that stdout holds only the results."""

    def _on_stderr(self, make: Any) -> Any:
        # Lightning builds each bar with file=sys.stdout, read when the bar is made.
        with contextlib.redirect_stdout(sys.stderr):
            return make()

    def init_sanity_tqdm(self):
        return self._on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self):
        return self._on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self):
        return self._on_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self):
        return self._on_stderr(super().init_test_tqdm)

    def init_predict_tqdm(self):
        return self._on_stderr(super().init_predict_tqdm)


def progress_callbacks(progress: bool | None, extra: Sequence[str] = ()) -> List[pl.Callback]:
    """The callbacks of a run: the quiet filters (plus ``extra``), and the stderr bars when ``progress``.

    ``progress=None`` shows the bars only when stderr is a terminal (not in logs or pipes).
    """
    if progress is None:
        progress = sys.stderr.isatty()
    return [QuietLightning(extra)] + ([StderrProgressBar()] if progress else [])
