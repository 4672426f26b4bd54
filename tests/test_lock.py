"""simdis_jax/lock.py: one run per workdir; what a second run is told, a stale lock taken over, re-entrance."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from simdis_jax import lock


def test_a_second_run_on_a_locked_workdir_is_refused_and_a_stale_lock_is_taken_over(tmp_path, caplog):
  workdir = str(tmp_path)
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    with open(os.path.join(workdir, lock.LOCK_FILE), "w") as f:
      json.dump({"host": os.uname().nodename, "pid": sleeper.pid, "since": "then"}, f)
    with pytest.raises(lock.WorkdirLocked, match=rf"Another run \(pid {sleeper.pid} on .*\) is using {workdir}"):
      lock.acquire(workdir)
  finally:
    sleeper.kill()
    sleeper.wait()
  with lock.held(workdir) as path:  # the holder is dead now: reported and taken over
    assert json.load(open(path))["pid"] == os.getpid()
    with lock.held(workdir):  # re-entrant in the holding process
      pass
    assert os.path.exists(path)
  assert not os.path.exists(path)
  assert f"stale lock {path} of process {sleeper.pid}" in caplog.text


def test_the_lock_file_names_this_process_and_the_workdir_is_made(tmp_path):
  workdir = str(tmp_path / "new" / "run")
  path = lock.acquire(workdir)
  try:
    assert path == os.path.join(workdir, lock.LOCK_FILE)
    holder = json.load(open(path))
    assert set(holder) == {"host", "pid", "since"}
    assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", holder["since"])
  finally:
    lock.release(path)
  assert os.listdir(workdir) == []


def test_a_lock_held_from_another_host_is_left_in_place_and_named(tmp_path):
  workdir, path = str(tmp_path), str(tmp_path / lock.LOCK_FILE)
  with open(path, "w") as f:
    json.dump({"host": "elsewhere", "pid": 1, "since": "2024-01-02 03:04:05"}, f)
  with pytest.raises(lock.WorkdirLocked) as e:
    lock.acquire(workdir)
  assert str(e.value) == (
    f"Another run (pid 1 on elsewhere, since 2024-01-02 03:04:05) is using {workdir}. Wait for "
    f"it to end, choose another --workdir, or, if that process is gone, delete {path}."
  )
  assert json.load(open(path))["host"] == "elsewhere"  # not ours to remove
  lock.release(path)  # not held here: nothing happens
  assert os.path.exists(path)


@pytest.mark.parametrize("content", ["", '{"host": "h'])
def test_a_lock_file_naming_no_holder_says_to_delete_it(tmp_path, content):
  workdir, path = str(tmp_path), str(tmp_path / lock.LOCK_FILE)
  with open(path, "w") as f:
    f.write(content)  # a process killed between creating and writing it
  with pytest.raises(lock.WorkdirLocked) as e:
    lock.acquire(workdir)
  assert str(e.value) == (
    f"{path} exists but names no holder (a run killed while starting?). If no other run uses "
    f"{workdir}, delete {path} and start again."
  )
  assert open(path).read() == content


def test_a_stale_lock_that_comes_back_at_once_is_another_run_starting(tmp_path, monkeypatch):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  workdir, path = str(tmp_path), str(tmp_path / lock.LOCK_FILE)

  def another_run_creates_it_first(p):
    with open(p, "w") as f:
      json.dump({"host": socket.gethostname(), "pid": dead.pid, "since": "then"}, f)
    return False

  monkeypatch.setattr(lock, "_try_create", another_run_creates_it_first)
  with pytest.raises(lock.WorkdirLocked) as e:
    lock.acquire(workdir)
  assert str(e.value) == (
    f"Could not take {path}: another run is starting on {workdir}; wait for it or choose another --workdir."
  )


def test_the_lock_is_re_entrant_and_goes_with_the_outermost_release(tmp_path):
  workdir = str(tmp_path)
  path = lock.acquire(workdir)
  assert lock.acquire(workdir) == path
  lock.release(path)
  assert os.path.exists(path)
  lock.release(path)
  assert not os.path.exists(path)
  assert lock.acquire(workdir) == path  # free again
  lock.release(path)


def test_an_object_store_workdir_is_not_locked(tmp_path):
  path = lock.acquire("gs://bucket/run")  # object stores have no exclusive create
  assert path == "gs://bucket/run/run.lock"
  lock.release(path)
