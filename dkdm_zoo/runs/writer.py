"""One writer per run folder, and a failed start that leaves the folder as it found it.

``open_run(path, resume=..., overwrite=...)`` is how a command that writes a run folder starts:

- it refuses, in one line, an ``--out`` that is a file, sits under a file or cannot be written;
  a folder that is not empty (unless ``resume`` or ``overwrite``); ``--resume`` onto a folder
  that is no run;
- it takes an OS file lock (``filelock``: flock on ``RUN/.dkdm-zoo.lock``) for as long as the
  command runs and records the holder (pid, host, command) beside it, so a second writer is
  refused naming the first one's pid; the OS drops the lock when a process dies, so a killed run
  never leaves a stale lock;
- when the command fails before anything worth keeping was written (no new checkpoint, preview or
  logged step), the folder goes back to what it was: a new run's folder is removed, a resumed
  run gets its recipe.toml, run.json and metrics.jsonl back, so the corrected command just works.

``--overwrite`` deletes the old run only when ``clear()`` is called (after the new run is built),
so a run that fails to build leaves the old one intact. Under torchrun only the main process opens
the folder (``lock=False`` elsewhere). Torch-free.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from dkdm_zoo.errors import UserError
from dkdm_zoo.runs.run import MARKERS, Run

LOCK_NAME = ".dkdm-zoo.lock"
HOLDER_NAME = ".dkdm-zoo.lock.json"  # who holds the lock (filelock leaves the lock file's content alone)
#: what a resumed run rewrites when it starts, restored if it fails before writing anything to keep
RESTORED_ON_FAILURE = ("recipe.toml", "run.json", "metrics.jsonl")


@dataclass
class _Before:
    """What the folder held when the command started."""

    created: Path | None  # the topmost folder this command created (None: the run folder existed)
    entries: set[str] = field(default_factory=set)
    files: dict[str, bytes] = field(default_factory=dict)
    checkpoints: set[str] = field(default_factory=set)
    previews: set[str] = field(default_factory=set)
    metrics_size: int = 0


class RunWriter:
    """The open run folder of one writing command (a context manager; see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, resume: bool, overwrite: bool, lock: bool = True):
        self.run = Run(path)
        self.resume, self.overwrite, self.locking = resume, overwrite, lock
        self._lock: Any = None
        self._before: _Before | None = None

    # -- opening -------------------------------------------------------------------------------------
    def __enter__(self) -> RunWriter:
        if not self.locking:
            return self
        path = self.run.path
        _check_folder(path)
        created = _topmost_missing(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create the run folder {path}: {exc.strerror or exc}; pass --out in a folder you can write"
            ) from None
        try:
            self._lock = RunLock(path)
            self._lock.acquire()
            self._check_contents()
        except BaseException:
            self._release()
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise
        self._before = self._snapshot(created)
        return self

    def _check_contents(self) -> None:
        run = self.run
        contents = [p for p in run.path.iterdir() if p.name not in (LOCK_NAME, HOLDER_NAME)]
        if self.resume:
            if not run.recipe_path.is_file():
                raise UserError(
                    f"--resume: {run.path} is not a run folder (no recipe.toml); start a new run without --resume"
                )
        elif contents and not self.overwrite:
            raise UserError(
                f"output folder {run.path} exists and is not empty: pass --resume to continue it or --overwrite to replace it"
            )
        elif contents and not any((run.path / m).exists() for m in MARKERS):
            raise UserError(
                f"--overwrite: {run.path} does not look like a run folder (no recipe.toml/run.json); refusing to delete it"
            )

    def _snapshot(self, created: Path | None) -> _Before:
        run = self.run
        before = _Before(created=created, entries={p.name for p in run.path.iterdir()})
        for name in RESTORED_ON_FAILURE:
            if (run.path / name).is_file():
                before.files[name] = (run.path / name).read_bytes()
        before.checkpoints = _names(run.checkpoints_dir)
        before.previews = _names(run.previews_dir)
        before.metrics_size = len(before.files.get("metrics.jsonl", b""))
        return before

    # -- during the run ------------------------------------------------------------------------------
    def clear(self) -> None:
        """``--overwrite``: delete the old run's contents now (the lock stays)."""
        if not (self.locking and self.overwrite):
            return
        for child in self.run.path.iterdir():
            if child.name in (LOCK_NAME, HOLDER_NAME):
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        self._before = self._snapshot(self._before.created if self._before else None)

    # -- closing -------------------------------------------------------------------------------------
    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.locking:
            return
        failed_early = kind is not None and self._before is not None and not self._wrote_something()
        if failed_early:
            self._restore()
        self._release()
        if failed_early and self._before is not None and self._before.created is not None:
            shutil.rmtree(self._before.created, ignore_errors=True)

    def _wrote_something(self) -> bool:
        """A new checkpoint, a new preview or a logged training step: worth keeping (and resuming)."""
        before, run = self._before, self.run
        assert before is not None
        if {n for n in _names(run.checkpoints_dir) - before.checkpoints if n.startswith("checkpoint-")}:
            return True
        if _names(run.previews_dir) - before.previews:
            return True
        try:
            with open(run.metrics_path, "rb") as fh:
                fh.seek(before.metrics_size)
                added = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return False
        for line in added:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "event" not in record and "step" in record:
                return True
        return False

    def _restore(self) -> None:
        before, path = self._before, self.run.path
        assert before is not None
        for child in path.iterdir():
            if child.name in before.entries or child.name in (LOCK_NAME, HOLDER_NAME):
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        for name in RESTORED_ON_FAILURE:
            target = path / name
            if name in before.files:
                target.write_bytes(before.files[name])
            else:
                target.unlink(missing_ok=True)
        for sub in ("checkpoints", "previews"):
            folder = path / sub
            if folder.is_dir() and sub not in before.entries and not any(folder.iterdir()):
                folder.rmdir()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class RunLock:
    """The OS file lock that makes a process the one writer of a run folder (a context manager)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock: Any = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path / LOCK_NAME), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise UserError(
                f"{self.path} is being written by another dkdm-zoo process ({self.holder()}): "
                "wait for it to finish, or pass another --out"
            ) from None
        except OSError as exc:
            raise UserError(
                f"cannot write to the run folder {self.path}: {exc.strerror or exc}; pass --out in a folder you can write"
            ) from None
        self._lock = lock
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "argv": sys.argv}
        try:
            (self.path / HOLDER_NAME).write_text(json.dumps(holder))
        except OSError as exc:
            self.release()
            raise UserError(f"cannot write to the run folder {self.path}: {exc.strerror or exc}") from None

    def holder(self) -> str:
        for _ in range(20):  # the holder writes its record right after taking the lock
            try:
                data = json.loads((self.path / HOLDER_NAME).read_text())
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(data["since"])))
                return f"pid {int(data['pid'])} on {data['host']}, since {since}"
            except (OSError, ValueError, KeyError, TypeError):
                time.sleep(0.05)
        return "pid unknown"

    def release(self) -> None:
        if self._lock is None:
            return
        # unlinked while still held (a process that opens the path later gets a fresh lock), so a
        # finished run folder holds no lock files
        for name in (HOLDER_NAME, LOCK_NAME):
            (self.path / name).unlink(missing_ok=True)
        self._lock.release()
        self._lock = None


def open_run(path: str | os.PathLike[str], *, resume: bool, overwrite: bool, lock: bool = True) -> RunWriter:
    """The run folder ``path`` opened for writing by this process (see the module docstring)."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    return RunWriter(path, resume=resume, overwrite=overwrite, lock=lock)


def _check_folder(path: Path) -> None:
    """``path`` may become a folder: it is none of a file, a path under a file, a name too long."""
    limit = _name_max(path)
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise UserError(
                f"--out {path}: the name {part[:40]}... is {len(os.fsencode(part))} bytes, the file system "
                f"allows {limit}: pass a shorter --out"
            )
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file: pass a folder for the run")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {path}: {parent} is a file, not a folder")
            break


def _name_max(path: Path) -> int:
    """The longest file name the file system under ``path`` takes (255 bytes where unknown)."""
    for parent in (path, *path.parents):
        try:
            return os.pathconf(parent, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):
            continue
    return 255


def _topmost_missing(path: Path) -> Path | None:
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()
