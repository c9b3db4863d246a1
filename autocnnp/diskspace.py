"""Running out of disk: recognise it, say where and how much, and keep room for the last word.

A full disk must not lose the records that explain what happened (the launcher's
``state.json``, a rank's ``errors/rank-K.json``). Writers that need to succeed then reserve
a little space early (:func:`reserve`): a file of zeros they delete, to write into its room,
when a write fails for space (:func:`write_with_reserve`).
"""

from __future__ import annotations

import errno
import math
import os
import shutil
from pathlib import Path
from typing import Callable, TypeVar

from autocnnp.errors import AutocnnpError

#: size of a reserve file: room for a state or error record with a long traceback
RESERVE_BYTES = 64 * 1024

T = TypeVar("T")


class DiskFullError(AutocnnpError):
    """A write failed because its filesystem is full; names the folder and the space needed."""

    exit_code = 5

    def __init__(self, path: Path, need_bytes: int | None, *, remedy: str | None = None) -> None:
        self.path = Path(path)
        self.need_bytes = need_bytes
        super().__init__(disk_full_message(path, need_bytes), remedy=remedy)


def disk_full_message(path: Path, need_bytes: int | None) -> str:
    """``no space left on PATH (X MB free), need about N MB``: the one wording for a full disk."""
    free = free_bytes(path)
    free_text = f" ({free / 2**20:.1f} MB free)" if free is not None else ""
    need = f", need about {max(1, math.ceil(need_bytes / 2**20))} MB" if need_bytes else ""
    return f"no space left on {path}{free_text}{need}"


def free_bytes(path: Path) -> int | None:
    """Free bytes of the filesystem holding ``path`` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, including TensorFlow's errors that only say so in their text."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def reserve(path: Path, size: int = RESERVE_BYTES) -> bool:
    """Create ``path`` holding ``size`` bytes of real blocks (not a sparse file); False when
    there is no room for it already."""
    try:
        with open(path, "wb") as handle:
            handle.write(b"\0" * size)
            handle.flush()
            os.fsync(handle.fileno())
        return True
    except OSError:
        Path(path).unlink(missing_ok=True)
        return False


def write_with_reserve(write: Callable[[], T], reserve_path: Path) -> T:
    """Call ``write``; when it fails for space and ``reserve_path`` exists, delete the reserve
    (freeing its blocks) and call ``write`` once more."""
    try:
        return write()
    except OSError as exc:
        if not is_disk_full(exc) or not Path(reserve_path).exists():
            raise
        Path(reserve_path).unlink()
        return write()
