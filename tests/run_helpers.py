"""Runs shared by several test modules: the tiny config's (multi-host and fault tests, in-process and as real
processes), the trained BYOL run of the learning tests (tests/conftest.py's byol_teacher fixture), and a method's
tiny config and fresh train state (the research-step tests of SimCLR and SimSiam)."""

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import NamedTuple
from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from conftest import tiny_config, xla_flags
from simdis_jax import checkpoint, config_files, configuration, methods, parallel, runs, train
from simdis_jax.state import build_networks, create_train_state
from simdis_jax import workdir as workdir_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "tiny_cli_config.py")
IMAGE_SHAPE = (16, 16, 1)  # the tiny config's images (Fashion-MNIST at image_size 16)
_BASELINE = {}
_LOGS = {}


@contextlib.contextmanager
def local_devices(n):
  """Runs train_and_evaluate in this process on a mesh of its first n (fake CPU) devices."""
  devices = jax.devices()[:n]
  real = parallel.make_mesh
  with mock.patch.object(parallel, "make_mesh", lambda d=None: real(devices)):
    yield


def baseline(tmp_path_factory):
  """Workdir of the uninterrupted run, 1 process × 4 devices, a checkpoint at every step (made once).

  A real process, as the runs compared with it bit for bit: XLA's CPU code for a
  4-device mesh in a process with 8 devices may round differently in the last bit.
  """
  if not _BASELINE:
    workdir = str(tmp_path_factory.mktemp("baseline"))
    (code,), (out,) = finish([start(workdir, devices=4)])
    assert code == 0, out
    _BASELINE["workdir"] = workdir
  return _BASELINE["workdir"]


def final_state(workdir):
  """The latest checkpoint of a run and its step, restored as host numpy arrays (a dict pytree)."""
  mgr = checkpoint.manager(workdir)
  step = mgr.latest_step()
  restored = mgr.restore(step, args=checkpoint.ocp.args.StandardRestore())
  mgr.close()
  return step, jax.tree.map(np.asarray, restored)


class TrainedRun(NamedTuple):
  """A finished run: where it is, its config and train_and_evaluate's final metrics."""

  workdir: str
  config: ml_collections.ConfigDict
  result: dict


def byol_learning_config():
  """150 steps of BYOL that lift the student's kNN (tests/test_learning.py has the measured figures).

  The student is a ResNet-10 of width 8 with 64/32 heads: as an offline teacher it is `model.teacher`
  of learning_teacher_net(). The kNN bank/queries (2,000 / 1,000) are those of every learning test.
  """
  c = tiny_config("byol", "byol")
  c.model.student = learning_teacher_net()
  c.data.augment = configuration.fashion_mnist_augment()
  # The demo's optimiser (LARS, base LR 6.0, weight decay 1e-5): lower rates barely move the kNN this early.
  c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = 6.0, 1e-5, 0.05
  c.train.batch_size = 64
  set_steps(c, 150)
  c.knn.networks = ("student",)
  set_learning_knn(c)
  return c


def learning_teacher_net():
  """config.model.teacher of a run distilling from byol_learning_config()'s run (ResNet-10 w8, heads 64/32)."""
  return configuration.network_config(10, 8, True, 64, 32)


def distil(c, workdir):
  """Trains the SimDis-Off config `c` in `workdir` on one device; returns train_and_evaluate's result.

  One device: on the tests' 8 fake devices a per-device batch of 4 and ~50 SyncBN all-reduces per pass of
  MobileNetV3 cost twice the CPU time (measured 291 vs 153 CPU-s for 60 steps); a learning test does not need
  the mesh (the multi-device paths have their own tests).
  """
  with local_devices(1):
    return train.train_and_evaluate(c, workdir)


def check_distillation(c, workdir, steps):
  """Every step of the run in `workdir` has a finite loss, and its frozen teacher (online and EMA, parameters and
  BatchNorm statistics) is exactly the student of c.teacher.workdir's BYOL run; returns the losses."""
  with open(f"{workdir}/{workdir_files.METRICS_FILE}") as f:
    losses = [row["loss"] for row in map(json.loads, f) if "loss" in row]
  assert len(losses) == steps and all(np.isfinite(losses))
  (_, student), (_, teacher) = final_state(workdir), final_state(c.teacher.workdir)
  for key in ("params", "batch_stats", "ema_params", "ema_batch_stats"):
    expected, frozen = jax.tree.leaves(teacher["student"][key]), jax.tree.leaves(student["teacher"][key])
    assert len(expected) == len(frozen)
    for x, y in zip(expected, frozen):
      np.testing.assert_array_equal(x, y)
  assert "encoder" in student["student"]["params"] and c.model.student.arch != "resnet"
  return losses


def set_steps(c, steps):
  """A run of `steps` steps that logs and saves only at its end (a learning test reads the final metrics)."""
  c.train.steps = c.train.log_every_steps = c.train.checkpoint_every_steps = steps


def set_learning_knn(c):
  """The learning tests' kNN: 2,000 bank images, 1,000 queries (1 query = 0.1 point), before and after."""
  c.knn.train_examples, c.knn.eval_examples, c.knn.batch_size = 2000, 1000, 256


def trained_byol(workdir):
  """Trains byol_learning_config() in `workdir`."""
  c = byol_learning_config()
  return TrainedRun(workdir, c, train.train_and_evaluate(c, workdir))


def resume(workdir):
  """Runs the tiny config on to its end in a new 1 × 4-device process (a restart)."""
  (code,), (out,) = finish([start(workdir, devices=4)])
  assert code == 0, out


def state_at(workdir, step=None):
  """The checkpoint at `step` (default latest) as host numpy leaves, and its step.

  Restored onto one device of this process, whatever topology wrote it.
  """
  if step is None:
    step = checkpoint.manager(workdir).latest_step()
  state = runs.restore(workdir, parallel.make_mesh(jax.devices()[:1]), step).state
  return step, [np.asarray(x) for x in jax.tree.leaves(state)]


def assert_same_state(a, b, exact=True):
  """Leaf-by-leaf equality of two restored states (bitwise, or to fp tolerance)."""
  assert len(a) == len(b) > 100
  for x, y in zip(a, b):
    if exact:
      np.testing.assert_array_equal(x, y)
    else:
      np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5)


def free_port():
  """A free TCP port on the loopback interface for the jax.distributed coordinator."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(workdir, devices, process_id=None, num_processes=None, port=None, extra=()):
  """Starts `python -m simdis_jax.main` on the tiny config (one process of a run of num_processes)."""
  cmd = [sys.executable, "-m", "simdis_jax.main", "--config", CONFIG, "--workdir", workdir, *extra]
  if num_processes:
    cmd += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}", f"--process_id={process_id}"]
  env = dict(os.environ, XLA_FLAGS=xla_flags(devices), PYTHONPATH=ROOT)
  # Output goes to files: a full pipe would block a process that nobody reads until it ends.
  log = open(f"{workdir.rstrip('/')}.{len(_LOGS)}.log", "w+")  # pylint: disable=consider-using-with
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
  _LOGS[proc.pid] = log
  return proc


def output(proc):
  """What a started process has printed so far."""
  log = _LOGS[proc.pid]
  log.flush()
  with open(log.name) as f:
    return f.read()


def start_group(workdir, num_processes, devices_each):
  """All processes of one multi-process run on loopback."""
  port = free_port()
  return [start(workdir, devices_each, i, num_processes, port) for i in range(num_processes)]


def finish(procs, timeout=300):
  """Waits for every process; returns their exit codes and output tails."""
  for p in procs:
    p.wait(timeout=timeout)
  return [p.returncode for p in procs], [output(p)[-3000:] for p in procs]


def logged_steps(workdir):
  """Steps with a loss line in metrics.jsonl (process 0 writes them as it trains)."""
  path = os.path.join(workdir, workdir_files.METRICS_FILE)
  if not os.path.exists(path):
    return []
  steps = []
  with open(path) as f:
    for line in f:
      try:
        steps.append(json.loads(line)["step"])
      except ValueError:  # a line being written
        pass
  return steps


def wait_for(predicate, procs, timeout=240, poll=0.005):
  """Polls until predicate() holds; fails if a process exits first or time runs out."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    result = predicate()
    if result:
      return result
    if any(p.poll() is not None for p in procs):
      raise AssertionError(
        f"a process ended before the awaited moment: {[p.poll() for p in procs]}; {output(procs[0])[-2000:]}"
      )
    time.sleep(poll)
  raise AssertionError("timed out waiting")


def send(proc, sig=signal.SIGTERM):
  """Sends a signal to one process by its id."""
  os.kill(proc.pid, sig)


def tiny_method_config(method, recipe, proj_dim):
  """tiny_config as `method` after its recipe (one epoch), 10 steps, heads 32/proj_dim and the tiny augmentation;
  not validated: the caller sets its own keys, then validates."""
  c = tiny_config(method, "byol")
  recipe(c, epochs=1.0)
  c.model.student.hidden_dim, c.model.student.proj_dim = 32, proj_dim
  c.train.steps = 10
  c.data.augment = tiny_config().data.augment
  return c


def fresh_state(config):
  """A new float32 train state of `config` (unsharded), its optimizer the method's at a constant rate 0.1."""
  nets = build_networks(config)
  tx = methods.make_optimizer(config, lambda step: jnp.asarray(0.1))
  return jax.jit(functools.partial(create_train_state, config, nets, tx, IMAGE_SHAPE))()


def shipped_config(spec):
  """get_config() of a shipped config file, 'path[:arg]' relative to the repository (as --config takes it)."""
  return config_files.load_config(os.path.join(ROOT, spec))
