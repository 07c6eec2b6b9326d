"""The files a run writes into its output folder, and what happens to those of an earlier run.

A second run into the same folder must not leave the first run's heat maps beside its own
checkpoint: an earlier run's outputs are refused unless ``overwrite`` is given, and then removed
before the new run writes anything. Only the names the run itself writes are touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Sequence


def previous_outputs(folder: Path, files: Sequence[str], folders: Sequence[str]) -> List[str]:
    """The names among ``files`` and ``folders`` that already exist in ``folder`` (folders end in '/')."""
    found = [name for name in files if (folder / name).exists()]
    return found + [f"{name}/" for name in folders if (folder / name).exists()]


def check_previous_outputs(folder: Path, files: Sequence[str], folders: Sequence[str], overwrite: bool) -> List[str]:
    """Refuse a folder holding an earlier run's outputs unless ``overwrite``; returns their names.

    Raises:
        ValueError: outputs of an earlier run exist and ``overwrite`` is False.
    """
    found = previous_outputs(folder, files, folders)
    if found and not overwrite:
        raise ValueError(
            f"{folder} holds the outputs of an earlier run ({', '.join(found)}); pass overwrite (--overwrite) "
            "to replace them, or choose another output folder"
        )
    return found


def remove_previous_outputs(folder: Path, names: Sequence[str]) -> None:
    """Delete the outputs named by :func:`check_previous_outputs` (a trailing '/' marks a folder)."""
    for name in names:
        path = folder / name.rstrip("/")
        if name.endswith("/"):
            shutil.rmtree(path)
        else:
            path.unlink()


def overlay_name(image_path: str | Path, relative_to: str | Path | None = None) -> str:
    """The overlay file of an image, without the ``.png`` added on writing.

    The full file name is kept (``a.png`` -> ``a.png``, ``a.jpg`` -> ``a.jpg``), so images of
    one folder that differ only in their extension get distinct overlays; with ``relative_to``
    the path below that folder is kept (``good/000.png``), so equal names in different
    folders do not collide either.

    Example:
        >>> overlay_name("data/test/hole/000.png", relative_to="data/test")
        'hole/000.png'
        >>> overlay_name("images/a.jpg")
        'a.jpg'
    """
    path = Path(image_path)
    if relative_to is None:
        return path.name
    return path.relative_to(relative_to).as_posix()
