"""Atomic file writes: a file is either written completely or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], overwrite: bool = True) -> Path:
    """Call ``write(tmp_path)``, then move the file onto ``path`` in one step.

    The temporary file lives in the destination folder so the final rename cannot cross file
    systems; on any error it is removed and ``path`` is left as it was.

    Args:
        path: destination; its folder is created.
        write: writes the complete file to the temporary path it is given.
        overwrite: replace an existing ``path``; when False an existing file is refused.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; a saved file should get the mode any other program would give it.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
