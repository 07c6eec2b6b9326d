"""``python -m anomaly_kernels`` runs the ``anomaly-kernels`` command."""

import sys

from anomaly_kernels.cli import main

sys.exit(main())
