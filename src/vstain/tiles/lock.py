"""One writer per output store: an OS file lock beside the store while a run writes it.

The lock file is ``.<store name>.lock`` in the store's folder; the run that holds it writes who
it is into it, which a refused second run reads to name the running one. The file is removed on
release; a run that took the lock checks that the file it locked is still the one at that path,
so a removal racing with a new run cannot give two runs the lock. The OS drops the lock when the
process ends, however it ends.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from vstain.errors import VstainError


class StoreBusyError(VstainError):
    """Another run is writing the output store."""


def lock_path(store) -> Path:
    store = Path(store)
    return store.with_name(f".{store.name}.lock")


class StoreLock:
    """Exclusive lock of output store ``store``: `acquire` fails at once while others hold it."""

    def __init__(self, store):
        self.path = lock_path(store)
        self.store = Path(store)
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            if not _try_lock(fd):
                holder = os.read(fd, 400).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise StoreBusyError(
                    f"{self.store} is being written by {holder}. Wait for that run to finish or "
                    "stop it, or choose another output path."
                )
            if _same_file(fd, self.path):
                break
            os.close(fd)  # removed by the previous holder after we opened it: take the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder().encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _holder() -> str:
    command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:200]
    return f"process {os.getpid()} on {socket.gethostname()} ({command or 'python'})"


if os.name == "nt":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
