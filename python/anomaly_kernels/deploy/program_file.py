"""Loading a ``torch.export`` archive (``.pt2``) only when it holds data, never pickled objects.

``torch.export.load`` reads a zip archive: the graph as JSON, tensors as raw bytes, and, for
objects that are not plain tensors (tensor subclasses, script objects, opaque constants),
pickles that it loads with ``weights_only=False``; its example inputs are read with
``weights_only=True`` but retried without that restriction when it fails. Unpickling a file
from elsewhere can run code, so :func:`load_program` first reads the archive's index and
refuses any archive that would reach one of those paths. ``torch.export.save`` writes none of
them for the graphs of :func:`~anomaly_kernels.deploy.export_model`.
"""

from __future__ import annotations

import io
import json
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from anomaly_kernels.deploy.metadata import METADATA_KEY
from anomaly_kernels.pipeline.inputs import one_line

# Prefixes (below the archive's root folder) of entries that torch loads by unpickling, or
# that hold compiled code.
_CODE_FOLDERS = ("data/aotinductor/", "data/executorch/", "data/mtia")
_CONFIGS = ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json")
_SAMPLE_INPUTS = "data/sample_inputs/model.pt"


def _refuse(path: Path, why: str) -> ValueError:
    return ValueError(f"{path} {why}; refused, because loading it could run code")


def check_data_only(path: Path) -> None:
    """Raise a ValueError unless the archive at ``path`` can be loaded without unpickling objects.

    Raises:
        ValueError: not a zip archive, an archive of another layout, or one holding pickled
            tensors, pickled constants, compiled code or example inputs beyond plain tensors.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{path} is not a torch.export archive (.pt2): {error}") from None
    with archive:
        names = archive.namelist()
        root = names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else ""
        inside = {name[len(root):]: name for name in names if name.startswith(root)}
        if len(inside) != len(names) or not all(f in inside for f in (*_CONFIGS, "models/model.json", _SAMPLE_INPUTS)):
            raise ValueError(f"{path} is not an archive written by torch.export.save for one model")
        if any(name.startswith(_CODE_FOLDERS) or (name.endswith(".pt") and name != _SAMPLE_INPUTS) for name in inside):
            raise _refuse(path, "holds compiled code or pickled weights")
        for config in _CONFIGS:
            try:
                entries = json.loads(archive.read(inside[config]))["config"]
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}: its {config} is damaged ({error})") from None
            for name, entry in entries.items():
                if entry.get("use_pickle", True) or not str(entry.get("path_name", "")).startswith(("weight_", "tensor_")):
                    raise _refuse(path, f"stores {name!r} as a pickled object")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.load(io.BytesIO(archive.read(inside[_SAMPLE_INPUTS])), weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as error:
            raise _refuse(path, f"holds example inputs that are not plain tensors ({type(error).__name__})") from None


def load_program(path: Path) -> Tuple[torch.export.ExportedProgram, Any]:
    """``torch.export.load`` of a checked archive; returns (program, its metadata record or None).

    Raises:
        ValueError: see :func:`check_data_only`, or an archive torch cannot deserialize.
    """
    check_data_only(path)
    extra: Dict[str, Any] = {METADATA_KEY: None}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as error:  # torch reports damaged archives with many exception types
        raise ValueError(f"{path} cannot be loaded by torch.export.load: {one_line(error)}") from None
    return program, extra.get(METADATA_KEY)
