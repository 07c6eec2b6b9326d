"""Where a model's pretrained backbone weights come from: a local file, the cache, a download, or none."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, Optional

import torch

from anomaly_kernels.pipeline.inputs import load_torch_file

PRETRAINED_MODES = ("auto", "download", "none")


def cached_weights_available(backbone: str) -> bool:
    """True when timm's pretrained weights for ``backbone`` are already in the local cache."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        config = timm.models.get_pretrained_cfg(backbone)
        repo = getattr(config, "hf_hub_id", None) if config is not None else None
        if not repo:
            return False
        for filename in ("model.safetensors", "pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo_id=repo, filename=filename), str):
                return True
    except Exception:  # any failure to look means: not known to be cached
        return False
    return False


def resolve_pretrained(backbone: str, mode: str, weights: Optional[str]) -> tuple[bool, str]:
    """Decide whether the model is built with timm's pretrained weights.

    Args:
        backbone: timm model name.
        mode: "auto" (use cached weights if present, never touch the network), "download"
            (let timm fetch them) or "none" (random initialisation).
        weights: a local weights file; when given, the model is built without pretrained weights
            and the file is loaded afterwards (see :func:`load_backbone_weights`).

    Returns:
        (pre_trained flag for the model constructor, a sentence saying what was chosen).
    """
    if mode not in PRETRAINED_MODES:
        raise ValueError(f"pretrained must be one of {PRETRAINED_MODES}, got {mode!r}")
    if weights is not None:
        if not Path(weights).exists():
            raise FileNotFoundError(f"weights file not found: {weights}")
        return False, f"backbone weights: loaded from {weights}"
    if mode == "download":
        return True, f"backbone weights: timm's pretrained {backbone} (downloaded if not cached)"
    if mode == "auto" and cached_weights_available(backbone):
        return True, f"backbone weights: timm's pretrained {backbone} from the local cache"
    reason = "as asked" if mode == "none" else "no cached weights and downloads were not asked for"
    return False, (
        f"backbone weights: RANDOM initialisation ({reason}); use --pretrained download or "
        f"--weights PATH for ImageNet features"
    )


def read_weights_file(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """The state dict of a timm / torchvision weights file (``{"state_dict": ...}`` unwrapped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file torch cannot read safely, or one that holds no tensors by name.
    """
    state = load_torch_file(path, "weights file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise ValueError(f"weights file {path} is not a state dict (a mapping of parameter names to tensors)")
    return state


def load_backbone_weights(feature_extractor: torch.nn.Module, weights: str | os.PathLike | Dict[str, torch.Tensor]) -> None:
    """Load a timm / torchvision state dict (or the file holding one) into a features-only backbone.

    Classifier weights in the file are ignored; any missing backbone weight, or a weight of
    another shape, is a ``ValueError``.
    """
    state = weights if isinstance(weights, dict) else read_weights_file(weights)
    source = "the weights" if isinstance(weights, dict) else str(weights)
    expected = feature_extractor.state_dict()
    wrong_shape = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if wrong_shape:
        key = wrong_shape[0]
        raise ValueError(
            f"{source} do not fit this backbone: {key} has shape {tuple(state[key].shape)}, "
            f"expected {tuple(expected[key].shape)} (weights of another architecture?)"
        )
    result = feature_extractor.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise ValueError(
            f"{source} lack {len(result.missing_keys)} backbone weights, e.g. {result.missing_keys[:3]} "
            "(weights of another architecture?)"
        )
    if result.unexpected_keys:
        warnings.warn(f"ignored {len(result.unexpected_keys)} weights of {source} outside the feature layers", stacklevel=2)
