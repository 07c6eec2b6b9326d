"""Lightning's remarks about this project's intended setup, silenced in end-to-end tests.

The one-pass models have no optimiser, keep a frozen backbone in eval mode and the tests use
worker-free loaders; Lightning warns about each of these on every run.
"""

import pytest

LIGHTNING_NOISE = [
    pytest.mark.filterwarnings("ignore:.*configure_optimizers.* returned .None:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*module\\(s\\) in eval mode:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
]

# Multi-process runs add: Lightning's advice to sync logged values (the metrics synchronise by
# themselves) and torch's deprecation notice from inside the DDP machinery.
DDP_NOISE = LIGHTNING_NOISE + [
    pytest.mark.filterwarnings("ignore:.*sync_dist=True.*"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated.*"),
]
