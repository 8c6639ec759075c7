"""Atomic, durable file writes, and the locks that make them safe between processes.

A file is written to a hidden temporary file in its destination folder (``.<name>.XXXXXXXX.part``),
flushed to the disk (fsync), then given its final name in one step, after which the folder is
flushed too, so that neither a crash nor a power cut can leave a half-written file under the final
name or lose a file already reported as written. Without ``overwrite`` the final name is taken with
a hard link, which fails if the name exists: "exists?" is decided at that step, never before it,
so of two writers exactly one wins and the other replaces nothing.

Files that belong together (an image's labels, probabilities and overlay) are staged one by one
(``stage_file``) and then named together by ``publish`` while the folder's lock is held
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
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_write", "StagedFile", "stage_file", "publish", "folder_lock", "claimed_folder",
           "remove_stale", "recover", "fsync_folder", "temp_target", "JOURNAL", "WORK_PREFIX"]

#: Journal of the publication in progress in a folder (see ``publish``).
JOURNAL = ".litenext-publish.json"
#: Name prefix of the work folders made by ``claimed_folder``.
WORK_PREFIX = ".litenext-work-"
# tempfile.mkstemp's names: prefix, 8 characters from [a-z0-9_], suffix
_TEMP = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.part$")
# errors meaning "this file system cannot do that", as opposed to a failure of this call
_UNSUPPORTED = {errno.EPERM, errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                errno.ENOLCK, errno.EBADF}


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], overwrite: bool = True) -> Path:
    """Call ``write(tmp_path)``, then give the complete file its name in one step.

    The temporary file lives in the destination folder so the final step cannot cross file
    systems; it is flushed to the disk before it is named, and the folder after. On any error it
    is removed and ``path`` is left as it was.

    Args:
        path: destination; its folder is created.
        write: writes the complete file to the temporary path it is given.
        overwrite: replace an existing ``path``; when False an existing file is refused, and a
            file that appears at ``path`` while ``write`` runs is refused too (never replaced).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):  # saves the work; decided again when the name is taken
        raise _exists(path)
    staged = stage_file(path, write)
    try:
        _place_all([staged], [overwrite])
    finally:
        staged.discard()
    return path


@dataclass(eq=False)
class StagedFile:
    """A complete, flushed temporary file waiting for its final name (see ``stage_file``)."""

    path: Path  #: the final name
    tmp: Path  #: the hidden temporary file beside it
    fd: int | None = None  #: open on ``tmp``, holding its lock; None once discarded

    def discard(self) -> None:
        """Remove the temporary file if still there, and release its lock. Safe to call twice.

        After ``publish`` the final name keeps the data: only the temporary name goes.
        """
        if self.fd is None:
            return
        try:
            if _same_file(self.tmp, self.fd):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.tmp)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "StagedFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def stage_file(path: str | os.PathLike, write: Callable[[str], Any]) -> StagedFile:
    """Write a file under a hidden temporary name beside ``path`` and flush it to the disk.

    Nothing is visible under ``path`` yet: ``publish`` (or ``atomic_write``) names it. The
    temporary file is locked by this process until ``discard``, so ``remove_stale`` leaves it.

    Raises:
        whatever ``write`` raises (OSError for a full disk ...); the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _locked_temp(path)
    staged = StagedFile(path, Path(tmp), fd)
    try:
        write(tmp)
        if not _same_file(tmp, fd):  # ``write`` put a new file at the path: lock that one
            os.close(staged.fd)
            staged.fd = os.open(tmp, os.O_RDONLY)
            _hold(staged.fd)
        # mkstemp creates 0600; a saved file should get the mode any other program would give it.
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync_file(tmp)
    except BaseException:
        staged.discard()
        raise
    return staged


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


def temp_target(name: str) -> str | None:
    """The final name a temporary file called ``name`` (``.<final>.XXXXXXXX.part``) was made for, or None."""
    match = _TEMP.match(name)
    return match["name"] if match else None


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (new, renamed or removed names) to the disk; no-op where unsupported."""
    if os.name == "nt":  # pragma: no cover - folders cannot be opened for fsync there
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
    finally:
        os.close(fd)


# --- naming -------------------------------------------------------------------------------------------


def _place_all(staged: list[StagedFile], replace: list[bool]) -> None:
    """Name each staged file (link, or replace keeping the temporary), flush the folder; undo on error."""
    done: list[tuple[StagedFile, Path | None, bool]] = []  # (file, backup of what it replaced, existed)
    try:
        for s, rep in zip(staged, replace):
            if rep:
                backup = _link_aside(s.path)
                existed = backup is not None or os.path.lexists(s.path)
                done.append((s, backup, existed))
                _replace_keeping(s.tmp, s.path)
            else:
                _link_new(s.tmp, s.path)
                done.append((s, None, False))
        fsync_folder(staged[0].path.parent)
    except BaseException:
        for s, backup, existed in reversed(done):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, s.path)
                elif not existed and s.fd is not None and _same_file(s.path, s.fd):
                    os.unlink(s.path)  # only a name this call created, holding this call's data
        with contextlib.suppress(OSError):
            fsync_folder(staged[0].path.parent)
        raise
    finally:
        for _, backup, _ in done:
            if backup is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(backup)


def _link_new(tmp: Path, path: Path) -> None:
    """Give ``tmp``'s data the name ``path`` too, failing if ``path`` exists (decided by the kernel)."""
    try:
        os.link(tmp, path, follow_symlinks=False)
        return
    except FileExistsError:
        raise _exists(path) from None
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
    # No hard links here (FAT, exFAT, some network shares): claim the name by exclusive creation,
    # then rename onto the empty claim. Readers may see it empty for an instant, never a mix.
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise _exists(path) from None
    os.replace(tmp, path)


def _replace_keeping(tmp: Path, path: Path) -> None:
    """Replace ``path`` by ``tmp``'s data in one step, keeping ``tmp`` (the journal may need it)."""
    side = _link_aside(tmp, path)
    os.replace(side if side is not None else tmp, path)


def _link_aside(source: Path, final: Path | None = None) -> Path | None:
    """A second, hidden name for ``source``'s data, named as a temporary file of ``final`` (default:
    ``source``) so that ``remove_stale`` knows it; None if ``source`` is absent or links are unsupported."""
    final = final or source
    for _ in range(100):
        # 8 characters before .part, as mkstemp's names have
        aside = final.parent / f".{final.name}.{secrets.token_hex(4)}.part"
        try:
            os.link(source, aside, follow_symlinks=False)
            return aside
        except FileExistsError:
            continue
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                return None
            raise
    return None  # pragma: no cover


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, f"{path} exists; pass overwrite=True (--overwrite) to replace it",
                           str(path))


# --- locks --------------------------------------------------------------------------------------------


def _locked_temp(path: Path) -> tuple[int, str]:
    for _ in range(100):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        _hold(fd)
        if _same_file(tmp, fd):
            return fd, tmp
        os.close(fd)  # removed as stale between mkstemp and the lock: take another name
    raise OSError(errno.EAGAIN, f"cannot create a temporary file beside {path}")  # pragma: no cover


def _hold(fd: int) -> None:
    """Take an exclusive lock on ``fd``, waiting for it; nothing where locks are unsupported."""
    if fcntl is None:  # pragma: no cover
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise


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


# --- small helpers ------------------------------------------------------------------------------------


def _same_file(path: str | os.PathLike, fd: int) -> bool:
    """Whether ``path`` names the file open as ``fd``."""
    try:
        a, b = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    # Linux shows it; setting and restoring it instead would briefly give other threads umask 0
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask
