"""Several hosts on loopback: 2 processes × 2 devices equal 1 × 4, preemption agreed by all, resharding 4 → 8 → 1."""

import json
import os
import shutil

import pytest

import run_helpers
import tiny_cli_config
from conftest import requires_fashion_mnist
from simdis_jax import checkpoint, parallel, preemption, train
from simdis_jax import workdir as workdir_files

pytestmark = requires_fashion_mnist
K = tiny_cli_config.STEPS


@pytest.mark.slow
def test_two_processes_equal_one_process_and_agree_on_the_preemption_step(baseline, tmp_path):
  """2 × 2 devices vs 1 × 4 (same global batch, seed); SIGTERM to process 1 alone stops both at one step."""
  workdir = str(tmp_path)
  procs = run_helpers.start_group(workdir, num_processes=2, devices_each=2)
  run_helpers.wait_for(lambda: 1 in run_helpers.logged_steps(workdir), procs)
  run_helpers.send(procs[1])  # as when Kubernetes/SLURM evicts one host first
  codes, errs = run_helpers.finish(procs)
  assert codes == [preemption.PREEMPTED_EXIT_CODE] * 2, errs
  stopped = checkpoint.manager(workdir).latest_step()
  assert 1 <= stopped < K
  assert all(f"Preempted: checkpoint saved at step {stopped}" in e for e in errs), errs
  # The state at the agreed step equals the one-process run's state at that step.
  run_helpers.assert_same_state(
    run_helpers.state_at(workdir, stopped)[1], run_helpers.state_at(baseline, stopped)[1], exact=False
  )

  codes, errs = run_helpers.finish(run_helpers.start_group(workdir, num_processes=2, devices_each=2))
  assert codes == [0, 0], errs
  step, state = run_helpers.state_at(workdir)
  assert step == K
  run_helpers.assert_same_state(state, run_helpers.state_at(baseline)[1], exact=False)
  # Only process 0 reports: each step's metrics line once over the two segments, one "Finished" line.
  assert run_helpers.logged_steps(workdir) == list(range(1, K + 1))
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
  with run_helpers.local_devices(devices):
    assert parallel.make_mesh().devices.size == devices
    train.train_and_evaluate(tiny_cli_config.get_config(), workdir)
  step, state = run_helpers.state_at(workdir)
  assert step == K
  run_helpers.assert_same_state(state, run_helpers.state_at(baseline)[1], exact=False)
  assert os.path.exists(os.path.join(workdir, workdir_files.SUMMARY_FILE))
