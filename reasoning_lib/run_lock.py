"""One writer per run folder: a lock file holding the pid and host of the process that trains there.

Two processes training into the same ``output_dir`` would interleave their logs and checkpoints. The main process
creates ``output_dir/run.lock`` atomically (``O_EXCL``) before writing anything; a second writer is refused with an
error naming the first. A lock left by a process that died on this host (killed, power cut) is taken over with a
message; a lock from another host cannot be checked from here, so it is refused with the command to remove it.
"""
from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

LOCK = "run.lock"


class RunLockedError(RuntimeError):
    """Another process is training into the same folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # unreadable or half-written: treated as a lock of unknown origin


def acquire(folder: str | os.PathLike) -> Path:
    """Create ``folder/run.lock`` for this process; raise :class:`RunLockedError` when a live writer holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
                print(f"{path}: taking over the lock of process {holder['pid']}, which is no longer running")
                path.unlink(missing_ok=True)
                continue
            who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"
            raise RunLockedError(
                f"{folder} is being trained by {who} (lock file {path}): wait for it, use another output_dir, or, "
                f"if that process is gone, delete {path}") from None
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        return path
    raise RunLockedError(f"could not take the lock {path}: another process keeps recreating it")


def release(path: Path) -> None:
    """Remove the lock when this process still holds it."""
    if _holder(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


@contextmanager
def hold(folder: str | os.PathLike | None, enabled: bool = True):
    """The lock on ``folder`` for the duration of the block (nothing when ``folder`` is None or not ``enabled``)."""
    if folder is None or not enabled:
        yield None
        return
    path = acquire(folder)
    try:
        yield path
    finally:
        release(path)
