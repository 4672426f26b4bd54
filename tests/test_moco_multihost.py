"""MoCo-v2 on two processes: the queue holds the keys of both processes' examples, as one process with both devices."""

import os
import subprocess
import sys

import jax
import pytest
import numpy as np

import run_helpers
from conftest import requires_fashion_mnist, xla_flags
from simdis_jax import parallel
from simdis_jax import runs as run_lib
from simdis_jax.methods import common

pytestmark = requires_fashion_mnist
STEPS = 2
BATCH = 16
FLAGS = (
  "--config.model.student.projector=moco",
  "--config.model.sync_bn=False",
  "--config.optim.name=sgd",
  "--config.moco.queue_size=64",
  f"--config.train.steps={STEPS}",
  f"--config.train.batch_size={BATCH}",
  f"--config.train.checkpoint_every_steps={STEPS}",
)


def start(workdir, devices, process_id=None, num_processes=None, port=None):
  """`python -m simdis_jax.main` on the tiny config as MoCo-v2 (one process of a run of num_processes)."""
  cmd = [
    sys.executable,
    "-m",
    "simdis_jax.main",
    "--config",
    f"{run_helpers.CONFIG}:moco_v2,byol",
    "--workdir",
    workdir,
    *FLAGS,
  ]
  if num_processes:
    cmd += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}", f"--process_id={process_id}"]
  env = dict(os.environ, XLA_FLAGS=xla_flags(devices), PYTHONPATH=run_helpers.ROOT)
  return subprocess.Popen(
    cmd, cwd=run_helpers.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )


def finish(procs):
  """Exit codes and output tails of the processes."""
  outs = [p.communicate(timeout=600)[0] for p in procs]
  return [p.returncode for p in procs], [o[-3000:] for o in outs]


def queue_of(workdir):
  """The final queue and pointer of a run (restored onto one device)."""
  state = run_lib.restore(workdir, parallel.make_mesh(jax.devices()[:1])).state
  return np.asarray(state.queue["queue"]), int(state.queue["ptr"])


@pytest.mark.slow
def test_two_processes_enqueue_the_keys_of_both(tmp_path):
  port = run_helpers.free_port()
  # The one-process reference runs beside the two-process run: its imports and tracing overlap theirs.
  two = [start(str(tmp_path / "two"), 1, i, 2, port) for i in range(2)]
  one = start(str(tmp_path / "one"), 2)
  codes, outs = finish(two)
  assert codes == [0, 0], outs
  (code,), (out,) = finish([one])
  assert code == 0, out
  q2, ptr2 = queue_of(str(tmp_path / "two"))
  q1, ptr1 = queue_of(str(tmp_path / "one"))
  assert ptr2 == ptr1 == STEPS * BATCH
  # Rows [0, 32): two global batches of keys; in each, examples 0-7 are process 0's and 8-15 process 1's.
  # Both halves equal the one-process run's keys (which gathers both devices in one process) ...
  np.testing.assert_allclose(q2[: STEPS * BATCH], q1[: STEPS * BATCH], rtol=2e-4, atol=2e-5)
  # ... and no half is still the initial queue's rows: the keys of both processes went in.
  initial = np.asarray(common.init_queue(jax.random.fold_in(jax.random.PRNGKey(0), 17), 64, q2.shape[1]))
  np.testing.assert_allclose(q2[STEPS * BATCH :], initial[STEPS * BATCH :], atol=1e-6)  # rows not reached yet
  for start_row in range(0, STEPS * BATCH, BATCH // 2):  # each process's half of each batch
    rows = slice(start_row, start_row + BATCH // 2)
    assert np.min(np.abs(q2[rows] - initial[rows]).max(-1)) > 1e-3, start_row
