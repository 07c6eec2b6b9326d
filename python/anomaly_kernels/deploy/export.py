"""Export a fitted PatchCore, PaDiM or DFKDE model as a ``torch.export`` program or as ONNX.

Both formats hold the same :class:`~anomaly_kernels.deploy.graph.InferenceGraph`, traced once
with ``torch.export`` for a dynamic batch size:

- ``"torch"``: ``model.pt2`` (``torch.export.save``). The graph keeps the native operators
  (``torch.ops.anomaly_kernels.*``, traced through their fake kernels): loading it needs
  ``anomaly_kernels`` installed, and it runs the same kernels as the Lightning model.
- ``"onnx"``: ``model.onnx``. Each native operator is first replaced by its standard-operator
  form (:mod:`anomaly_kernels.deploy.operators`), so ONNX Runtime runs the model with no custom
  library. Weights beyond ONNX's 2 GB limit (PaDiM with wide_resnet50_2) go to
  ``model.onnx.data`` beside it.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import torch

from anomaly_kernels.data.transforms import resolve_image_size
from anomaly_kernels.deploy.graph import InferenceGraph, model_name, output_names
from anomaly_kernels.deploy.metadata import METADATA_KEY, describe
from anomaly_kernels.deploy.operators import STANDARD_FORMS
from anomaly_kernels.lightning import AnomalyModule
from anomaly_kernels.pipeline.checkpoint import load_model
from anomaly_kernels.pipeline.inputs import about, check_output_folder
from anomaly_kernels.pipeline.outputs import check_previous_outputs, remove_previous_outputs

EXPORT_FORMATS = ("torch", "onnx")
# The files each format writes into the output folder (the first is the model).
EXPORT_FILES = {"torch": ("model.pt2",), "onnx": ("model.onnx", "model.onnx.data")}
# Batch size of the example the graph is traced with; any batch size runs afterwards.
_EXAMPLE_BATCH = 2

ImageSize = Union[int, Sequence[int], None]


def export_model(
    checkpoint_or_module: Union[str, Path, AnomalyModule],
    format: str = "torch",
    output_dir: Union[str, Path] = "exported_model",
    image_size: ImageSize = None,
    overwrite: bool = False,
) -> Path:
    """Write the inference graph of a fitted model into ``output_dir``; returns the model file.

    The graph takes images (B, 3, H, W) float32, normalised as the training images were, for
    any B >= 1, and returns what ``predict_step`` adds to a batch: ``pred_scores`` (B,),
    ``pred_labels`` (B,) bool and, for PatchCore and PaDiM, ``anomaly_maps`` (B, 1, H, W) and
    ``pred_masks`` (B, 1, H, W) bool, with the module's thresholds and normalisation. Load it
    with :class:`~anomaly_kernels.deploy.Inferencer`.

    Args:
        checkpoint_or_module: a checkpoint file (``anomaly-kernels fit``'s ``model.ckpt`` or a
            ``Trainer.save_checkpoint`` file, read without running code), or a fitted
            :class:`~anomaly_kernels.models.PatchCore`, :class:`~anomaly_kernels.models.PaDiM`
            or :class:`~anomaly_kernels.models.DFKDE` on the CPU (it is not modified).
        format: ``"torch"`` (``model.pt2``) or ``"onnx"`` (``model.onnx``).
        output_dir: the folder to write into (created).
        image_size: side (or (H, W)) of the input images: needed for a DFKDE module (it takes any
            size) and for a checkpoint that does not record it; must agree where it is known.
        overwrite: replace an earlier export of the same format in ``output_dir``.

    Raises:
        ValueError: an unknown format, an unfitted model, a normalisation without statistics,
            a bad checkpoint or image size, or an output folder that cannot be used (or holds an
            earlier export, without ``overwrite``).
        TypeError: a module of another kind.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {list(EXPORT_FORMATS)}, got {format!r}")
    files = EXPORT_FILES[format]
    with about("output_dir"):
        folder = check_output_folder(output_dir, files=files)
        replaced = check_previous_outputs(folder, files, (), overwrite)
    with about("image_size"):
        size = None if image_size is None else resolve_image_size(image_size)
    with about("checkpoint"):
        module, recorded = _module(checkpoint_or_module, size)
        graph = InferenceGraph(module)
    with about("image_size"):
        input_size = _input_size(module, size or recorded)
    example = torch.zeros(_EXAMPLE_BATCH, 3, *input_size)
    program = torch.export.export(graph, (example,), dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}})
    outputs = output_names(graph.name)
    record = describe(graph.name, input_size, outputs, module.normalization, graph.predictions.thresholds())
    folder.mkdir(parents=True, exist_ok=True)
    remove_previous_outputs(folder, replaced)
    if format == "torch":
        return _save_program(program, record, folder / files[0])
    return _save_onnx(program, example, outputs, record, folder)


def _module(source: Any, size: Optional[Tuple[int, int]]) -> Tuple[AnomalyModule, Optional[Tuple[int, int]]]:
    """The module to export, and the image size its checkpoint records (``None`` for a module)."""
    if isinstance(source, (str, Path)):
        module, metadata = load_model(source, None if size is None or size[0] != size[1] else size[0])
        return module, (metadata["image_size"], metadata["image_size"])
    if not isinstance(source, AnomalyModule):
        raise TypeError(
            "checkpoint_or_module must be a checkpoint path or a PatchCore, PaDiM or DFKDE module, "
            f"got {type(source).__name__}"
        )
    model_name(source)  # a TypeError for other modules
    devices = sorted({tensor.device.type for tensor in (*source.parameters(), *source.buffers())} - {"cpu"})
    if devices:
        raise ValueError(
            f"checkpoint_or_module must be on the CPU to be exported, got tensors on {devices}: call module.cpu() first"
        )
    return source, None


def _input_size(module: AnomalyModule, size: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """(H, W) of the images the graph takes: the model's own, or ``size`` for DFKDE."""
    fixed = getattr(module.model, "input_size", None)
    if fixed is None:
        if size is None:
            raise ValueError(
                f"image_size: a {type(module).__name__} model takes images of any size; give the size to export for"
            )
        return tuple(size)
    if size is not None and tuple(size) != tuple(fixed):
        raise ValueError(f"image_size: the model takes {tuple(fixed)} images, got {tuple(size)}")
    return tuple(fixed)


def _save_program(program: torch.export.ExportedProgram, record: str, target: Path) -> Path:
    """``torch.export.save`` to a temporary file beside ``target``, renamed over it."""
    partial = target.with_name(f".{target.stem}.partial-{os.getpid()}.pt2")
    try:
        with warnings.catch_warnings():
            # Buffers that are views of a larger tensor (e.g. PCA's axes) are saved as the range
            # they cover; torch warns that this "may cause issues" for weights off the CPU, and
            # exports are made on the CPU.
            warnings.filterwarnings("ignore", message="No complete tensor found in the group")
            torch.export.save(program, partial, extra_files={METADATA_KEY: record})
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _save_onnx(
    program: torch.export.ExportedProgram, example: torch.Tensor, outputs: Sequence[str], record: str, folder: Path
) -> Path:
    """The program with standard forms of the native operators, as ONNX in ``folder``."""
    standard = program.run_decompositions(STANDARD_FORMS)
    native = sorted({str(node.target) for node in standard.graph.nodes if str(node.target).startswith("anomaly_kernels.")})
    if native:
        raise RuntimeError(f"native operators without a standard form remain in the graph: {native}")
    onnx_program = torch.onnx.export(
        standard, (example,), dynamo=True, input_names=["images"], output_names=list(outputs), verbose=False
    )
    onnx_program.model.metadata_props[METADATA_KEY] = record
    model_file, data_file = EXPORT_FILES["onnx"]
    # Saved under the final names in a scratch folder (a large model's weights file is referenced
    # by name), then moved: the model last, so a reader never sees a model without its weights.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".model.onnx.partial-") as scratch:
        onnx_program.save(Path(scratch) / model_file)
        for name in (data_file, model_file):
            if (Path(scratch) / name).exists():
                os.replace(Path(scratch) / name, folder / name)
    return folder / model_file
