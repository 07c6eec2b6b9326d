"""End-to-end runs behind the ``anomaly-kernels fit`` and ``predict`` commands."""

from anomaly_kernels.pipeline.fit import FitResult, fit_and_test
from anomaly_kernels.pipeline.predict import predict_folder

__all__ = ["FitResult", "fit_and_test", "predict_folder"]
