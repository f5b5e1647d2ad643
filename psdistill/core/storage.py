"""A write that fails for the file system's sake (no space, read-only, no permission) as one line
naming the path: `StorageError` (a `PsdistillError`, so the CLI prints it and exits 2).

    with writing(run_dir / "student", needed=checkpoint_bytes):
        trainer.train()

Python's writes raise `OSError` with an errno and the file name; SQLite says only "database or disk
is full" (SQLITE_FULL) or "readonly database"; torch.save and safetensors report a broken stream
("basic_ios::clear: iostream error", "unexpected pos", "os error 28"). For those the file system
itself is asked (statvfs: read-only flag, space left) what went wrong; a failure it does not explain
is re-raised as it was (a bug keeps its traceback).
"""
from __future__ import annotations

import errno
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from psdistill.core.errors import PsdistillError, StorageError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS}
_PERMISSION = {errno.EACCES, errno.EPERM}
# What torch.save / safetensors / tokenizers say when the bytes do not reach the disk.
_STREAM_FAILURES = ("iostream error", "unexpected pos", "PytorchStreamWriter", "file write failed",
                    "os error 28", "os error 30", "os error 13", "No space left", "Read-only file system")
_LOW_SPACE = 1 << 20  # below this the device counts as full when the error gives no errno
_WAY_OUT = "then rerun: finished stages are kept"


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def _existing(path: Path) -> Path:
    """`path`, or its nearest existing parent (what statvfs can ask about)."""
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path("/")


def _free_bytes(path: Path) -> int:
    st = os.statvfs(_existing(path))
    return st.f_bavail * st.f_frsize


def _kind_from_file_system(path: Path, needed: Optional[int]) -> Optional[str]:
    where = _existing(path)
    st = os.statvfs(where)
    if st.f_flag & os.ST_RDONLY:
        return "read-only"
    if st.f_bavail * st.f_frsize < max(needed or 0, _LOW_SPACE):
        return "space"
    if not os.access(where if where.is_dir() else where.parent, os.W_OK):
        return "permission"
    return None


def _kind(exc: BaseException, path: Path, needed: Optional[int]) -> Optional[str]:
    if isinstance(exc, OSError) and exc.errno is not None:
        return ("space" if exc.errno in _NO_SPACE else "read-only" if exc.errno in _READ_ONLY
                else "permission" if exc.errno in _PERMISSION else None)
    if isinstance(exc, sqlite3.OperationalError):
        name = getattr(exc, "sqlite_errorname", "")
        if name == "SQLITE_FULL":
            return "space"
        if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR")):
            return _kind_from_file_system(path, needed) or ("read-only" if "READONLY" in name else None)
        return None
    if any(s in str(exc) for s in _STREAM_FAILURES):
        return _kind_from_file_system(path, needed)
    return None


def storage_message(exc: BaseException, path: str | Path, needed: Optional[int] = None) -> Optional[str]:
    """The one line for `exc`, raised while writing `path` (`needed`: bytes the write needs, if known),
    or None when the file system does not explain it."""
    path = Path(getattr(exc, "filename", None) or path)
    kind = _kind(exc, path, needed)
    if kind == "space":
        need = f", about {_mb(needed)} needed" if needed else ""
        return (f"{path}: no space left on the device ({_mb(_free_bytes(path))} free{need}); free some space "
                f"or set run_dir on a larger disk, {_WAY_OUT}")
    if kind == "read-only":
        return f"{path}: read-only file system; set run_dir on a writable disk, {_WAY_OUT}"
    if kind == "permission":
        return f"{path}: permission denied; make it writable or set run_dir elsewhere, {_WAY_OUT}"
    return None


@contextmanager
def writing(path: str | Path, needed: Optional[int] = None) -> Iterator[None]:
    """Turn a failure the file system explains, inside the block, into `StorageError` naming `path`."""
    try:
        yield
    except PsdistillError:  # already one line (a StorageError from a nested block keeps its file)
        raise
    except Exception as e:  # OSError, sqlite3.OperationalError, torch's RuntimeError, SafetensorError
        message = storage_message(e, path, needed)
        if message is None:
            raise
        raise StorageError(message) from None
