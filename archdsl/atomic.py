"""Atomic file writes: every file archdsl writes goes through here.

A write goes to a temporary file in the target's directory, is flushed and fsync'd, and then
renamed over the target with ``os.replace`` (atomic on POSIX and Windows within one file system).
So a reader sees the old file or the new one, never a half-written one, and a failed write (a
full disk, an exception in the writer, Ctrl-C) leaves the previous file byte for byte as it was;
the temporary file is removed. A symlinked target is written through: the link stays and the file
it points to is replaced.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["replacing", "write_bytes", "write_text"]


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends normally, the file written
    there is fsync'd and atomically replaces ``path``. If the block raises, ``path`` is untouched
    and the temporary file is deleted. For writers that want a file name (safetensors.save_file)."""
    target = Path(os.path.realpath(path))
    if target.is_dir():  # checked first, so the error names the target, not the temporary file
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:  # a missing or unwritable folder: name what the caller asked to write
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:  # the permissions a plain open() would give (mkstemp makes 0600), or the old file's
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:  # the bytes are on disk before the name points at them
            os.fsync(f.fileno())
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); best effort where directories cannot be opened."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically make ``path`` hold exactly ``data``."""
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Atomically make ``path`` hold ``text`` (UTF-8 by default; newlines written as given)."""
    write_bytes(path, text.encode(encoding))
