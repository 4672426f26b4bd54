"""Several hosts on loopback: 2 processes × 2 devices equal 1 × 4, preemption agreed by all, resharding 4 → 8 → 1."""

import json
import os
import shutil

import pytest

import runs
import tiny_cli_config
from conftest import requires_fashion_mnist
from simdis_jax import checkpoint, parallel, train
from simdis_jax import workdir as workdir_files

pytestmark = requires_fashion_mnist
K = tiny_cli_config.STEPS


@pytest.mark.slow
def test_two_processes_equal_one_process_and_agree_on_the_preemption_step(baseline, tmp_path):
  """2 × 2 devices vs 1 × 4 (same global batch, seed); SIGTERM to process 1 alone stops both at one step."""
  workdir = str(tmp_path)
  procs = runs.start_group(workdir, num_processes=2, devices_each=2)
  runs.wait_for(lambda: 1 in runs.logged_steps(workdir), procs)
  runs.send(procs[1])  # as when Kubernetes/SLURM evicts one host first
  codes, errs = runs.finish(procs)
  assert codes == [checkpoint.PREEMPTED_EXIT_CODE] * 2, errs
  stopped = checkpoint.manager(workdir).latest_step()
  assert 1 <= stopped < K
  assert all(f"Preempted: checkpoint saved at step {stopped}" in e for e in errs), errs
  # The state at the agreed step equals the one-process run's state at that step.
  runs.assert_same_state(runs.state_at(workdir, stopped)[1], runs.state_at(baseline, stopped)[1], exact=False)

  codes, errs = runs.finish(runs.start_group(workdir, num_processes=2, devices_each=2))
  assert codes == [0, 0], errs
  step, state = runs.state_at(workdir)
  assert step == K
  runs.assert_same_state(state, runs.state_at(baseline)[1], exact=False)
  # Only process 0 reports: each step's metrics line once over the two segments, one "Finished" line.
  assert runs.logged_steps(workdir) == list(range(1, K + 1))
  assert "Finished simdis_on" in errs[0] and "Finished" not in errs[1]
  info = json.loads(open(os.path.join(workdir, workdir_files.RUN_INFO_FILE)).read())
  assert (info["processes"], info["devices"]) == (2, 4)


@pytest.mark.parametrize("devices", [8, 1])
def test_a_checkpoint_saved_on_4_devices_resumes_on_another_count(baseline, tmp_path, devices):
  """Save on 4 devices, restore on 8 (or 1), train on to the end: the same run to fp tolerance."""
  workdir = str(tmp_path)
  shutil.copytree(baseline, workdir, dirs_exist_ok=True)
  mgr = checkpoint.manager(workdir)
  for step in mgr.all_steps():
    if step > 4:
      mgr.delete(step)
  mgr.close()
  with runs.local_devices(devices):
    assert parallel.make_mesh().devices.size == devices
    train.train_and_evaluate(tiny_cli_config.get_config(), workdir)
  step, state = runs.state_at(workdir)
  assert step == K
  runs.assert_same_state(state, runs.state_at(baseline)[1], exact=False)
  assert os.path.exists(os.path.join(workdir, workdir_files.SUMMARY_FILE))
