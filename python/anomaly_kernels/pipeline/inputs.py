"""Checks of the files and folders a run reads and writes, made before any expensive work.

Errors are ordinary ``ValueError`` / ``FileNotFoundError`` with a one-line message. Inside
``with about("parameter"):`` an error is tagged with the parameter it concerns, so that the
command line can name the matching flag.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

# Errors a bad argument produces; anything else is a fault of the program and keeps its traceback.
INPUT_ERRORS = (ValueError, TypeError, OSError, RuntimeError)


@contextmanager
def about(parameter: str) -> Iterator[None]:
    """Tag an input error raised inside the block with ``parameter`` (unless already tagged)."""
    try:
        yield
    except INPUT_ERRORS as error:
        if getattr(error, "parameter", None) is None:
            error.parameter = parameter
        raise


def parameter_of(error: BaseException) -> Optional[str]:
    """The parameter an error was tagged with by :func:`about`, or None."""
    return getattr(error, "parameter", None)


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when the message is empty)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, KeyError) and lines:
        return f"missing key {lines[0]}"
    return lines[0] if lines else type(error).__name__


def load_torch_file(path: str | Path, what: str) -> Any:
    """``torch.load`` of a file with ``weights_only=True``, with one-line errors naming ``what``.

    Only tensors, numbers, strings and containers are accepted: a file that needs any other
    Python object is refused, since unpickling it could run code.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, an empty file, or a file torch cannot read (text, truncated, ...).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty")
    not_torch = "not a file written by torch.save"
    with warnings.catch_warnings():
        # torch warns about pickle protocols of files it is about to refuse anyway.
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
            if found:
                raise ValueError(
                    f"{what} {path} holds Python objects other than tensors and plain values ({found.group(1)}); "
                    "refused, because loading it could run code"
                ) from None
            reason = not_torch  # any other refusal of the restricted unpickler: bytes torch.save never writes
        except Exception as error:  # torch reports damaged files with many exception types
            reason = one_line(error)
            if reason.startswith("PytorchStreamReader"):
                reason = "damaged or truncated archive"
            elif isinstance(error, (EOFError, KeyError)) or reason.startswith("invalid load key"):
                reason = not_torch
    raise ValueError(f"{what} {path} cannot be read by torch.load: {reason}")


def check_output_folder(path: str | Path, files: Sequence[str] = (), folders: Sequence[str] = ()) -> Path:
    """Check that ``path`` can be used (or created) as an output folder.

    Args:
        path: the folder.
        files: names of files the run writes inside it (must not be folders there).
        folders: names of sub-folders the run writes (must not be files there).

    Raises:
        ValueError: ``path`` or one of its parents is a file, a planned file or sub-folder has
            the other kind there, or the folder cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot create the folder {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{existing} is not writable")
    for name in files:
        if (path / name).is_dir():
            raise ValueError(f"{path / name} is a folder, but the run writes a file there")
    for name in folders:
        if (path / name).exists() and not (path / name).is_dir():
            raise ValueError(f"{path / name} is a file, but the run writes a folder there")
    return path
