"""Fitted models and their exports, made once per test session and shared by the deploy tests."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest

from deploy_models import EXPORT_OPTIONS, Fitted, fit

from anomaly_kernels.deploy import export_model


@pytest.fixture(scope="session")
def fitted() -> Callable[[str], Fitted]:
    """``fitted(name)``: the fitted model ``name`` (fitted on first use)."""
    cache: Dict[str, Fitted] = {}
    return lambda name: cache[name] if name in cache else cache.setdefault(name, fit(name))


@pytest.fixture(scope="session")
def exported(fitted, tmp_path_factory) -> Callable[[str, str], Path]:
    """``exported(name, format)``: the model file of that export of ``fitted(name)``."""
    cache: Dict[Tuple[str, str], Path] = {}

    def get(name: str, fmt: str) -> Path:
        if (name, fmt) not in cache:
            folder = tmp_path_factory.mktemp(f"export-{name}-{fmt}")
            cache[name, fmt] = export_model(fitted(name).module, format=fmt, output_dir=folder, **EXPORT_OPTIONS[name])
        return cache[name, fmt]

    return get
