"""Output sets: files named together under a folder's lock, and the leftovers of dead runs.

Files that belong together (an image's labels, probabilities and overlay) are staged one by one
(``files.stage_file``) and then named together by ``publish`` while the folder's lock is held
(``folder_lock``): other runs that take the lock see all of them or none, and a journal lets the
next run that takes the lock finish a publication cut short by a kill.

The process writing a temporary file or using a work folder (``claimed_folder``) holds an
``flock`` on it while it lives; the kernel drops the lock when the process dies, however it dies,
so ``remove_stale`` removes what killed processes left behind and never what a live one owns.
Without ``fcntl`` (Windows) nothing is locked and nothing is removed as stale.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Collection, Iterator

from .files import _UNSUPPORTED, StagedFile, _hold, _link_new, _place_all, _replace_keeping, _same_file, \
    atomic_write, fcntl, fsync_folder, temp_target

__all__ = ["publish", "folder_lock", "claimed_folder", "remove_stale", "recover", "JOURNAL", "WORK_PREFIX"]

#: Journal of the publication in progress in a folder (see ``publish``).
JOURNAL = ".litenext-publish.json"
#: Name prefix of the work folders made by ``claimed_folder``.
WORK_PREFIX = ".litenext-work-"

def publish(staged: list[StagedFile], replace: bool | Collection[Path] = False) -> None:
    """Give staged files of one folder their final names, all of them or none.

    Call with ``folder_lock`` held for the folder: the lock makes the set appear at once to every
    other process that takes it, and ``folder_lock`` replays the journal written here if this
    process is killed half-way, so that the set is completed rather than left in part.

    Args:
        staged: files from ``stage_file``, all for one folder; named in this order.
        replace: True: existing files are replaced; a collection of final paths: only those may be
            replaced; False: nothing is replaced.

    Raises:
        FileExistsError: a name that may not be replaced is taken; nothing of the set was kept.
        OSError: naming failed; files this call named are removed and replaced ones restored.
    """
    if not staged:
        return
    folder = staged[0].path.parent
    if any(s.path.parent != folder for s in staged):
        raise ValueError("publish: all files must be in one folder")
    flags = [replace if isinstance(replace, bool) else s.path in set(map(Path, replace)) for s in staged]
    if len(staged) == 1:
        _place_all(staged, flags)
        return
    entries = [{"tmp": s.tmp.name, "name": s.path.name, "replace": f} for s, f in zip(staged, flags)]
    text = json.dumps({"format": "napari-litenext publish", "version": 1, "files": entries})
    atomic_write(folder / JOURNAL, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    try:
        _place_all(staged, flags)
    finally:
        # The temporary files stay until the journal is gone: a kill before this line is completed
        # by ``recover``, a kill after it leaves the set complete.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / JOURNAL)
        with contextlib.suppress(OSError):
            fsync_folder(folder)


def recover(folder: str | os.PathLike) -> list[str]:
    """Complete a publication that a killed process left half done in ``folder``.

    Called by ``folder_lock`` once the lock is held (so the publisher is dead or done). Every file
    of the set whose temporary file is still there is given its name, so the set is complete.

    Returns:
        The names given now (empty when there was nothing to complete).
    """
    folder = Path(folder)
    journal = folder / JOURNAL
    try:
        data = json.loads(journal.read_text(encoding="utf-8"))
        entries = [(str(e["tmp"]), str(e["name"]), bool(e["replace"])) for e in data["files"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError):
        entries = []  # written atomically, so not ours or damaged by hand: nothing to replay
    named = []
    for tmp_name, name, replace in entries:
        if temp_target(tmp_name) != name or "/" in name or os.sep in name:
            continue  # only a temporary file beside its own final name
        tmp, path = folder / tmp_name, folder / name
        if not os.path.lexists(tmp):
            continue
        with contextlib.suppress(FileNotFoundError):
            if os.path.samefile(tmp, path):
                continue
        try:
            if replace:
                _replace_keeping(tmp, path)
            else:
                _link_new(tmp, path)
            named.append(name)
        except FileExistsError:
            pass  # someone else's file took the name meanwhile: it stays
    fsync_folder(folder)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(journal)
    fsync_folder(folder)
    for tmp_name, name, _ in entries:  # the dead publisher's temporary files, now named
        if temp_target(tmp_name) == name and "/" not in name and os.sep not in name:
            _remove_if_unowned(folder / tmp_name, is_dir=False)
    return named


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[list[str]]:
    """Hold the folder's exclusive lock (the folder is created if missing).

    The lock is an ``flock`` on the folder itself (or on a ``.litenext.lock`` file in it where the
    file system cannot lock folders), held by an open file: the kernel releases it when the
    process ends, even by kill -9. It excludes other processes and other threads alike.

    Yields:
        The names given by ``recover``, which runs first: a ``publish`` that a killed process left
        half done is completed before anything else happens under the lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = _lock_folder(folder)
    try:
        yield recover(folder)
    finally:
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def claimed_folder(parent: str | os.PathLike, prefix: str = WORK_PREFIX) -> Iterator[str]:
    """A new hidden work folder in ``parent``, locked while in use and removed afterwards."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        folder = tempfile.mkdtemp(prefix=prefix, dir=parent)
        fd = os.open(folder, os.O_RDONLY)
        _hold(fd)
        if _same_file(folder, fd):
            break
        os.close(fd)  # removed as stale between mkdtemp and the lock: take another
    else:  # pragma: no cover
        raise OSError(errno.EAGAIN, f"cannot claim a work folder in {parent}")
    try:
        yield folder
    finally:
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)


def remove_stale(folder: str | os.PathLike, targets: Callable[[str], bool] | None = None) -> list[str]:
    """Remove temporary files and work folders in ``folder`` that no live process holds.

    Hold ``folder_lock`` while calling this, so that a publication in progress (whose temporary
    files its journal still needs) is not in the way.

    Args:
        folder: the folder to clean (not recursive).
        targets: only temporary files made for a final name with ``targets(name)`` true are
            considered (``None``: all); work folders (``WORK_PREFIX``) always are.

    Returns:
        The names removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name.startswith(WORK_PREFIX) and entry.is_dir(follow_symlinks=False):
            is_dir = True
        elif (target := temp_target(entry.name)) is not None and entry.is_file(follow_symlinks=False):
            if targets is not None and not targets(target):
                continue
            is_dir = False
        else:
            continue
        if _remove_if_unowned(Path(entry.path), is_dir):
            removed.append(entry.name)
    return removed



# --- locks --------------------------------------------------------------------------------------------


def _unowned(fd: int) -> bool:
    """True when no one else holds a lock on ``fd``'s file (the lock is taken; closing ``fd`` frees it)."""
    if fcntl is None:  # pragma: no cover - ownership unknown: treat as owned
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # held elsewhere (EWOULDBLOCK), or locks unsupported: keep it
        return False



def _lock_folder(folder: Path) -> int | None:
    if fcntl is None:  # pragma: no cover
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd
    except OSError as exc:
        os.close(fd)
        if exc.errno not in _UNSUPPORTED:
            raise
    # NFS locks need a file open for writing
    fd = os.open(folder / ".litenext.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:  # pragma: no cover
        if exc.errno not in _UNSUPPORTED:
            os.close(fd)
            raise
    return fd


def _remove_if_unowned(path: Path, is_dir: bool) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if is_dir else 0))
    except OSError:
        return False
    try:
        if not _unowned(fd) or not _same_file(path, fd):
            return False
        if is_dir:
            shutil.rmtree(path, ignore_errors=True)
            return not os.path.lexists(path)
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)

