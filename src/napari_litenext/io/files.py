"""Atomic, durable file writes.

A file is written to a hidden temporary file in its destination folder (``.<name>.XXXXXXXX.part``),
flushed to the disk (fsync), then given its final name in one step, after which the folder is
flushed too, so that neither a crash nor a power cut can leave a half-written file under the final
name or lose a file already reported as written. Without ``overwrite`` the final name is taken with
a hard link, which fails if the name exists: "exists?" is decided at that step, never before it,
so of two writers exactly one wins and the other replaces nothing.

The process writing a temporary file holds an ``flock`` on it while it lives (released by the
kernel however the process dies), which is how ``output_sets.remove_stale`` tells leftovers of dead
runs from files in use. Naming several files together, folder locks, journals and leftovers are in
``output_sets``; their names stay importable from here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# names that moved to output_sets; loaded on first use, since output_sets imports this module
_IN_OUTPUT_SETS = ("publish", "folder_lock", "claimed_folder", "remove_stale", "recover", "JOURNAL", "WORK_PREFIX")
__all__ = ["atomic_write", "StagedFile", "stage_file", "fsync_folder", "temp_target", *_IN_OUTPUT_SETS]
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


def __getattr__(name: str) -> Any:
    if name in _IN_OUTPUT_SETS:
        from . import output_sets

        return getattr(output_sets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
