"""Checkpoints of the command line: written once and renamed, checksummed, rebuilt without running code.

``fit`` saves the Lightning checkpoint with an extra ``"anomaly_kernels"`` entry: the model name,
the image size, the category and a SHA-256 of the saved state dict. ``predict`` reads it with
``torch.load(weights_only=True)``, checks the checksum (a flipped byte anywhere in the state,
e.g. in PaDiM's inverse covariances, is detected) and rebuilds the module from the checkpoint's
hyper-parameters. A checkpoint that ``Trainer.save_checkpoint`` wrote in a user's own script
(no such entry, hence no checksum) is accepted too: the model is recognised by the buffers of
its fitted state, and the image size comes from its hyper-parameters or the caller.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import pytorch_lightning as pl
import torch

from anomaly_kernels.pipeline.inputs import load_torch_file, one_line
from anomaly_kernels.pipeline.models import MODEL_NAMES, model_class

CHECKPOINT_KEY = "anomaly_kernels"
CHECKSUM_KEY = "state_sha256"

# A buffer only each model's fitted state holds: how a plain Lightning checkpoint is recognised.
_FITTED_BUFFER = {
    "patchcore": "model.memory_bank",
    "padim": "model.gaussian.inv_covariance",
    "dfkde": "model.kde_model.dataset",
}


def state_checksum(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict's tensors, in name order.

    Args:
        state_dict: ``{name: tensor}``; tensors of any dtype and device.

    Example:
        >>> a = state_checksum({"w": torch.zeros(3)})
        >>> a == state_checksum({"w": torch.zeros(3)}), a == state_checksum({"w": torch.ones(3)})
        (True, False)
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state dict entry {name!r} is not a tensor but a {type(tensor).__name__}")
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # Raw bytes of any dtype (bool, bfloat16, ...): reinterpret the flat copy as bytes.
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(trainer: pl.Trainer, path: Path, metadata: Dict[str, Any]) -> Path:
    """Save the fitted module with what ``predict`` needs to rebuild and verify it.

    ``metadata`` (model name, image size, ...) is stored under ``"anomaly_kernels"`` together
    with the checksum of the saved state dict. The checkpoint is written once to a temporary
    file beside ``path`` and renamed over it: an interrupted save leaves the previous file (or
    none), never a half one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    module = trainer.lightning_module
    hook = module.on_save_checkpoint

    def with_metadata(checkpoint: Dict[str, Any]) -> None:
        hook(checkpoint)
        entry = dict(metadata)
        if isinstance(checkpoint.get("state_dict"), Mapping):
            entry[CHECKSUM_KEY] = state_checksum(checkpoint["state_dict"])
        checkpoint[CHECKPOINT_KEY] = entry

    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    module.on_save_checkpoint = with_metadata
    try:
        trainer.save_checkpoint(partial, weights_only=True)
        os.replace(partial, path)
    finally:
        del module.on_save_checkpoint
        if partial.exists():
            partial.unlink()
    return path


def _model_of_plain_checkpoint(state: Mapping[str, Any], path: Path) -> str:
    found = [name for name, key in _FITTED_BUFFER.items() if key in state]
    if len(found) != 1:
        raise ValueError(
            f"{path} is a Lightning checkpoint of no model this command knows: neither written by "
            f"'anomaly-kernels fit' (no '{CHECKPOINT_KEY}' entry) nor holding the fitted state of one of {MODEL_NAMES}"
        )
    return found[0]


def checkpoint_metadata(checkpoint: Any, path: Path, image_size: Optional[int] = None) -> Dict[str, Any]:
    """What rebuilding needs: ``{"model", "image_size"}`` (and ``fit``'s other entries, if any).

    Args:
        checkpoint: the loaded checkpoint.
        path: its file (for messages).
        image_size: the side of the input images, for a checkpoint that does not record it;
            one that records it must agree.

    Raises:
        ValueError: not a Lightning checkpoint, a model this command does not know, a damaged
            metadata entry, a state dict whose checksum differs from the recorded one, or no
            image size known.
    """
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    if not isinstance(checkpoint.get("hyper_parameters", {}), dict):
        raise ValueError(f"{path}: its 'hyper_parameters' entry is not a mapping")
    state = checkpoint["state_dict"]
    metadata = checkpoint.get(CHECKPOINT_KEY)
    if metadata is None:
        metadata = {"model": _model_of_plain_checkpoint(state, path)}
    elif not isinstance(metadata, dict) or metadata.get("model") not in MODEL_NAMES:
        raise ValueError(f"{path}: its '{CHECKPOINT_KEY}' entry names no known model (one of {MODEL_NAMES})")
    else:
        metadata = dict(metadata)
        recorded = metadata.get(CHECKSUM_KEY)
        if recorded is not None and recorded != state_checksum(state):
            raise ValueError(
                f"{path} is corrupted: its saved state does not match the checksum written with it "
                "(the file was changed or damaged after 'fit' wrote it)"
            )
    size = metadata.get("image_size")
    if size is None:
        input_size = checkpoint.get("hyper_parameters", {}).get("input_size")
        if isinstance(input_size, (tuple, list)) and len(input_size) == 2 and input_size[0] == input_size[1]:
            size = input_size[0]
        else:
            size = image_size
        if size is None:
            raise ValueError(f"{path} does not record the image size it was trained at; give it (--image-size)")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{path}: the recorded image size is not a positive int, got {size!r}")
    if image_size is not None and image_size != size:
        raise ValueError(f"{path} was trained on {size}-pixel images; --image-size {image_size} disagrees")
    metadata["image_size"] = size
    return metadata


def load_model(checkpoint: str | Path, image_size: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
    """Rebuild a fitted module from a checkpoint; returns (module, metadata).

    Accepts checkpoints of ``anomaly-kernels fit`` and of ``Trainer.save_checkpoint`` (see the
    module doc). The file is read with ``torch.load(weights_only=True)``: tensors and plain
    values only, so a checkpoint from an untrusted source cannot run code.

    Args:
        checkpoint: the file.
        image_size: the side of the input images, for a checkpoint that does not record it.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that is not such a checkpoint: empty, truncated, not written by torch,
            corrupted (checksum), of an unknown model, or holding the settings or weights of
            another model.
    """
    path = Path(checkpoint)
    loaded = load_torch_file(path, "checkpoint")
    metadata = checkpoint_metadata(loaded, path, image_size)
    cls = model_class(metadata["model"])
    settings = dict(loaded.get("hyper_parameters", {}))
    parameters = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(name for name in settings if name not in parameters and not takes_any)
    # The backbone weights come from the checkpoint: never download them again.
    settings["pre_trained"] = False
    try:
        if unknown:
            raise TypeError(f"unexpected settings {unknown}")
        module = cls(**settings)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{path} is marked as a {metadata['model']} checkpoint but holds settings that model does not "
            f"take ({one_line(error)}); was it written by another program?"
        ) from None
    try:
        module.on_load_checkpoint(loaded)
        module.load_state_dict(loaded["state_dict"], strict=True)
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        raise ValueError(
            f"{path}: the saved weights do not fit a {metadata['model']} model ({one_line(error)})"
        ) from None
    return module, metadata
