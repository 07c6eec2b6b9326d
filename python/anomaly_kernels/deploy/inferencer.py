"""Inferencer: scores, maps and labels of images from an exported model, without Lightning."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

import torch

from anomaly_kernels.deploy.export import EXPORT_FILES
from anomaly_kernels.deploy.metadata import METADATA_KEY, parse
from anomaly_kernels.deploy.program_file import load_program
from anomaly_kernels.models.backbone import check_images
from anomaly_kernels.models.finite_images import check_finite_images, check_finite_outputs

# File suffix -> format.
_FORMATS = {".pt2": "torch", ".onnx": "onnx"}
EXPORTED_SUFFIXES = tuple(_FORMATS)


def _model_file(path: Union[str, Path]) -> Path:
    """The model file of ``path``: the file itself, or the one export of a folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"exported model not found: {path}")
    if path.is_dir():
        found = [path / files[0] for files in EXPORT_FILES.values() if (path / files[0]).is_file()]
        if len(found) != 1:
            what = "holds no exported model" if not found else f"holds several exported models ({', '.join(f.name for f in found)})"
            raise ValueError(f"{path} {what}; name the model file")
        return found[0]
    if path.suffix not in _FORMATS:
        raise ValueError(f"{path} is not an exported model: expected a {' or '.join(_FORMATS)} file, got '{path.suffix}'")
    return path


class Inferencer:
    """Run a model written by :func:`~anomaly_kernels.deploy.export_model`.

    ``.pt2`` files are loaded with ``torch.export.load`` after checking that the archive holds
    no pickled objects (see :mod:`~anomaly_kernels.deploy.program_file`), and run with the native
    operators; ``.onnx`` files run in ONNX Runtime (package ``onnxruntime``, CPU), with no
    custom library.

    Args:
        path: the model file, or the folder that holds exactly one exported model.
        device: where a ``.pt2`` program runs ("cpu", "cuda", ...); ONNX models run on the CPU.

    Attributes:
        path: the model file.
        format: "torch" or "onnx".
        model: "patchcore", "padim" or "dfkde".
        input_size: (H, W) of the images the model takes.
        outputs: the names of the entries :meth:`predict` returns.
        normalization: ``None``, "min_max" or "cdf": whether scores and maps are normalised
            (threshold at 0.5) or raw.
        thresholds: ``{"image": float, "pixel": float}``: ``pred_labels`` is ``pred_scores >=
            thresholds["image"]``, ``pred_masks`` is ``anomaly_maps >= thresholds["pixel"]``.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: not an exported model, or a damaged or unsafe one.
        ImportError: an ONNX model without ``onnxruntime`` installed.

    Example (``images`` a (B, 3, H, W) batch; the README's "Export a model" runs this)::

        inferencer = Inferencer("exported/model.onnx")
        labels = inferencer.predict(images)["pred_labels"]
    """

    def __init__(self, path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> None:
        self.path = _model_file(path)
        self.format = _FORMATS[self.path.suffix]
        self.device = torch.device(device)
        if self.format == "torch":
            program, record = load_program(self.path)
            self._program = program.module().to(self.device)
        else:
            if self.device.type != "cpu":
                raise ValueError(f"device: ONNX models run on the CPU here, got {device!r}")
            self._session = _onnx_session(self.path)
            record = self._session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        metadata = parse(record, self.path)
        self.model: str = metadata["model"]
        self.input_size = metadata["input_size"]
        self.outputs = metadata["outputs"]
        self.normalization = metadata["normalization"]
        self.thresholds = metadata["thresholds"]

    def predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Predictions of a batch.

        Args:
            images: (B, 3, H, W) floating point, (H, W) = :attr:`input_size`, normalised as the
                training images were (e.g. by :class:`~anomaly_kernels.data.PredictFolder`);
                computed in float32; not modified.

        Returns:
            ``{"pred_scores": (B,), "pred_labels": (B,) bool}`` and, for PatchCore and PaDiM,
            ``"anomaly_maps": (B, 1, H, W)`` and ``"pred_masks": (B, 1, H, W) bool``, on the
            CPU for ONNX models, on :attr:`device` otherwise.

        Raises:
            ValueError: images of another shape or size, images holding NaN or infinite values,
                or images whose scores overflow (each named by its index), as the models raise.
        """
        check_images(images, self.input_size)
        # The checks of the models' forward, which a traced graph cannot raise: see
        # anomaly_kernels.models.finite_images for why non-finite results are refused.
        check_finite_images(images)
        images = images.detach().to(torch.float32)
        if self.format == "torch":
            with torch.no_grad():
                values = self._program(images.to(self.device))
        else:
            arrays = self._session.run(list(self.outputs), {"images": images.cpu().contiguous().numpy()})
            values = [torch.from_numpy(array) for array in arrays]
        predictions = dict(zip(self.outputs, values))
        check_finite_outputs(images, *(predictions[key] for key in ("pred_scores", "anomaly_maps") if key in predictions))
        return predictions

    __call__ = predict


def _onnx_session(path: Path) -> Any:
    """An ONNX Runtime CPU session of ``path``; a clear ImportError without ``onnxruntime``."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            f"running {path} needs ONNX Runtime: pip install onnxruntime (or export with format='torch')"
        ) from None
    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime reports bad files with its own exception types
        raise ValueError(f"{path} cannot be loaded by ONNX Runtime: {str(error).strip().splitlines()[0]}") from None
