"""An exclusive lock held through a lock file that is removed when the lock is released.

Two runs must never write one query journal, and a records folder must not fill with lock files of runs long
gone. On POSIX systems the lock is ``flock`` on the lock file: the kernel drops it when its holder dies, so a lock
file left by a killed run is simply taken over (and removed on release) by the next run. After taking the lock,
the holder checks that the path still names the file it locked (another holder may have removed it in between);
if not, it tries again. Elsewhere :mod:`filelock` holds it (its file is left in place).
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


class LockHeld(Exception):
    """Another holder has the lock."""


class ExclusiveLock:
    """A non-blocking exclusive lock on ``path`` (see the module's description).

    Use :meth:`take` to acquire it and :meth:`release` to give it up and remove the file.
    """

    def __init__(self, path: Path, handle: object) -> None:
        self.path = path
        self._handle = handle

    @classmethod
    def take(cls, path: str | os.PathLike) -> "ExclusiveLock":
        """Take the lock now or fail.

        Raises:
            LockHeld: another process (or another object in this one) holds it.
            OSError: the lock file cannot be created.
        """
        path = Path(path)
        if fcntl is None:  # pragma: no cover - not POSIX
            from filelock import FileLock, Timeout

            lock = FileLock(str(path), timeout=0, thread_local=False)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                raise LockHeld(str(path)) from None
            return cls(path, lock)
        for _ in range(100):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockHeld(str(path)) from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return cls(path, fd)
            os.close(fd)  # the file was removed (or replaced) by its last holder after we opened it: try again
        raise OSError(f"could not take the lock {path}: its file keeps being replaced")

    def release(self) -> None:
        """Remove the lock file, then drop the lock (idempotent)."""
        if self._handle is None:
            return
        if isinstance(self._handle, int):
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self._handle)
        else:  # pragma: no cover - filelock
            self._handle.release(force=True)  # type: ignore[attr-defined]
        self._handle = None
