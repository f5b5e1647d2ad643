"""One run at a time per run directory: `<run>/.lock`, held with `fcntl.flock` for the run's lifetime.

The kernel releases the lock when its holder exits, however it dies (kill -9 included), so a lock
file left by a dead process is simply taken over; the file names the holder (pid and host) for the
message a second run gets. flock works on local file systems and on NFS (Linux maps it to NFS locks); where a file system
has no locks the run goes on unlocked, with a warning.
"""
from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from psdistill.core.errors import ConfigError, StorageError
from psdistill.core.logs import get_logger
from psdistill.core.storage import storage_message

LOCK_NAME = ".lock"


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold `<run_dir>/.lock` (created with the folder if needed); a held one raises ConfigError at once."""
    path = Path(run_dir) / LOCK_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # read-only, no permission, no space: a run could not write its outputs either
        reason = storage_message(e, path) or f"{path}: {e.strerror}"
        raise StorageError(f"run_dir {path.parent}: cannot write its lock file: {reason}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(f"run_dir {path.parent}: in use by {holder} (lock {path}); wait for it to finish "
                              "or use another run_dir") from None
        except OSError as e:  # ENOLCK, EOPNOTSUPP: a file system without locks (some NFS, FUSE mounts)
            get_logger(__name__).warning(
                "run_dir %s: its file system cannot lock %s (%s): running unlocked; do not start a second "
                "run on it until this one ends", path.parent, path, e.strerror)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a waiting run's open)
