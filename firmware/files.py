"""Durable small writes: one helper for every file the device or the broker tools must never leave half-written.

``write_atomic`` replaces a file whole (temp file, fsync, rename) or leaves the old one;
``append_line`` adds one fsynced line; both raise OSError on a short write (a full disk)
instead of leaving a torn file unnoticed.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_all(fd: int, data: bytes, path: Path) -> None:
    """One ``write`` of ``data`` to ``fd``, then fsync; OSError naming ``path`` on a short write."""
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(f"{path}: wrote {written} of {len(data)} bytes (disk full?)")
    os.fsync(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, keep_owner: bool = False) -> None:
    """Replace ``path`` with ``data`` at ``mode`` (whatever the umask); on any error the old file
    stays whole and no temporary file is left. ``keep_owner``: the new file gets the old one's
    owner and group when we may set them (root editing a service's files)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            if keep_owner:
                try:
                    st = path.stat()
                    os.fchown(fd, st.st_uid, st.st_gid)
                except (FileNotFoundError, PermissionError):
                    pass  # a new file, or not root: it is ours, as it was before
            write_all(fd, data, tmp)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append_line(path: Path, line: bytes) -> None:
    """Append ``line`` and a newline to ``path`` (0600, created if missing) in one write, fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        write_all(fd, line + b"\n", path)
    finally:
        os.close(fd)
