"""One run per workdir: a lock file held by process 0 of the run that writes it.

<workdir>/run.lock holds the holder's host, pid and start time. A second run
on the same workdir stops with a message naming the holder. A lock left by a
process that died (same host, pid gone) is reported and taken over; one held
from another host cannot be checked from here, so the message says how to
remove it by hand. The lock is re-entrant within a process (main.py holds it
across pretraining and the final evaluation that train_and_evaluate also locks).
"""

import contextlib
import json
import logging
import os
import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

LOCK_FILE = "run.lock"
_HELD = {}  # path -> re-entrant depth in this process


class WorkdirLocked(RuntimeError):
  """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def _try_create(path: str) -> bool:
  """Creates the lock file atomically; False if it already exists."""
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:
    json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
  return True


def _holder(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):  # half-written by a process killed between create and write
    return {}


def acquire(workdir: str) -> str:
  """Takes <workdir>/run.lock (process 0 writes it; all processes call this), or raises WorkdirLocked naming the
  holder."""
  path = os.path.join(workdir, LOCK_FILE)
  if _HELD.get(path):
    _HELD[path] += 1
    return path
  error = ""
  if jax.process_index() == 0 and "://" not in workdir:  # object stores have no O_EXCL create: unlocked
    os.makedirs(workdir, exist_ok=True)
    for _ in range(2):  # a second try after removing a stale lock
      if _try_create(path):
        break
      holder = _holder(path)
      host, pid = holder.get("host"), holder.get("pid")
      if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        logging.warning(
          "Removing the stale lock %s of process %d on %s (since %s), which is no longer running.",
          path,
          pid,
          host,
          holder.get("since"),
        )
        os.remove(path)
        continue
      if not holder:
        error = (
          f"{path} exists but names no holder (a run killed while starting?). If no other run uses "
          f"{workdir}, delete {path} and start again."
        )
      else:
        error = (
          f"Another run (pid {pid} on {host}, since {holder.get('since')}) is using {workdir}. Wait for it "
          f"to end, choose another --workdir, or, if that process is gone, delete {path}."
        )
      break
    else:  # the stale lock came back at once: another run is starting on this workdir right now
      error = f"Could not take {path}: another run is starting on {workdir}; wait for it or choose another --workdir."
  if jax.process_count() > 1:  # every process stops, not only process 0
    if multihost_utils.broadcast_one_to_all(np.int32(bool(error))):
      error = error or f"Another run holds {path} (see process 0's message)."
  if error:
    raise WorkdirLocked(error)
  _HELD[path] = 1  # every process counts its holds, so that all of them re-enter alike (no collective)
  return path


def release(path: str) -> None:
  """Gives the lock back (the file goes when the outermost holder in this process releases it)."""
  depth = _HELD.get(path, 0)
  if depth > 1:
    _HELD[path] = depth - 1
  elif depth == 1:
    del _HELD[path]
    if jax.process_index() == 0 and "://" not in path:
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)


@contextlib.contextmanager
def held(workdir: str):
  """Holds the workdir's lock for the body of a `with` block."""
  path = acquire(workdir)
  try:
    yield path
  finally:
    release(path)
