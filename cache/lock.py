"""One writer at a time for a folder vtm writes (a feature cache, a describe or training output).

The lock is a file, `.vtm-lock`, holding the writer's pid, host and process start time. It is created
complete or not at all (written under a temporary name, then hard-linked to its final name, which fails
if it exists), so a second writer always reads who holds it. A lock left by a process that no longer
runs on this host is stale and taken over; a lock from another host is never guessed about.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

LOCK_FILE = ".vtm-lock"


class LockError(RuntimeError):
    """Another vtm process writes this folder; the message names it."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), which tells a live process from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _alive(holder: dict) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it runs, as another user
    started = holder.get("process_start")
    return started is None or _process_start(pid) in (None, started)


def describe_holder(holder: dict) -> str:
    return (
        f"{holder.get('command', 'vtm')} (pid {holder.get('pid')} on {holder.get('host')}, since "
        f"{holder.get('since', '?')})"
    )


class DirectoryLock:
    """`with DirectoryLock(folder, "vtm extract"):` — raises LockError while another live process holds it."""

    def __init__(self, folder: Path, command: str):
        self.path = Path(folder) / LOCK_FILE
        self.command = command
        self.token = uuid.uuid4().hex
        self.held = False

    def acquire(self) -> DirectoryLock:
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_start": _process_start(os.getpid()),
            "command": self.command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "token": self.token,
        }
        tmp = self.path.with_name(f"{LOCK_FILE}.{self.token}")
        try:
            tmp.write_text(json.dumps(me))
        except OSError as e:  # read-only, full or not ours: name the folder, not the lock's temporary
            e.filename = str(self.path.parent)
            raise
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return self
                except FileExistsError:
                    holder = self._read()
                    if holder is None:
                        continue  # released between our link and our read: try again
                    if holder.get("host") == me["host"] and not _alive(holder):
                        self._remove_if(holder)  # stale: its writer is gone
                        continue
                    raise LockError(
                        f"{self.path.parent} is being written by {describe_holder(holder)}; wait for it to finish. "
                        f"If that process is gone (e.g. on another machine), delete {self.path} and run again."
                    ) from None
            raise LockError(f"could not take the lock {self.path}: other processes keep taking it; run again")
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            holder = self._read()
            if holder is not None and holder.get("token") == self.token:
                self.path.unlink(missing_ok=True)
            self.held = False

    def _read(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"pid": None, "host": None, "command": "an unknown writer (unreadable lock file)"}
        return holder if isinstance(holder, dict) else {"pid": None, "host": None}

    def _remove_if(self, holder: dict) -> None:
        # Only the exact lock we judged stale: a fresh writer may have taken it meanwhile.
        if self._read() == holder:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
