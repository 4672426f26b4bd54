"""Faults a cluster inflicts (SIGTERM, kill -9, full or unwritable disks) and bad inputs, each answered clearly."""

import os
import shutil
import signal

import pytest

import run_helpers
import test_checkpoint
import tiny_cli_config
from conftest import requires_fashion_mnist
from simdis_jax import checkpoint, lock, parallel, preemption, train
from simdis_jax import workdir as workdir_files

K = tiny_cli_config.STEPS


@requires_fashion_mnist
@pytest.mark.slow
def test_sigterm_mid_run_saves_at_a_step_boundary_and_the_restart_ends_bit_identical(baseline, tmp_path):
  workdir = str(tmp_path)
  proc = run_helpers.start(workdir, devices=4)
  run_helpers.wait_for(lambda: 1 in run_helpers.logged_steps(workdir), [proc])
  run_helpers.send(proc, signal.SIGTERM)
  (code,), (out,) = run_helpers.finish([proc])
  assert code == preemption.PREEMPTED_EXIT_CODE, out
  stopped = checkpoint.manager(workdir).latest_step()
  assert 1 <= stopped < K and f"checkpoint saved at step {stopped}" in out and "Run the same command" in out
  run_helpers.assert_same_state(run_helpers.state_at(workdir, stopped)[1], run_helpers.state_at(baseline, stopped)[1])
  run_helpers.resume(workdir)
  step, state = run_helpers.state_at(workdir)
  assert step == K
  run_helpers.assert_same_state(state, run_helpers.state_at(baseline)[1])


def test_damaged_checkpoints_of_a_run_resume_from_the_intact_step_and_end_as_the_uninterrupted_run(baseline, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(baseline, workdir)
  test_checkpoint.truncate(workdir, K)
  os.remove(f"{workdir}/checkpoints/{K - 1}/default/_METADATA")
  test_checkpoint.flip_bit(workdir, K - 2)
  proc = run_helpers.start(workdir, devices=4, extra=["--verbosity=0"])
  (code,), (out,) = run_helpers.finish([proc])
  assert code == 0, out
  log = run_helpers.output(proc)
  assert f"Restored step {K - 3} after skipping damaged checkpoints: step {K}: unreadable" in log
  assert f"step {K - 1}: unreadable metadata" in log and f"step {K - 2}: checksum mismatch" in log
  step, state = run_helpers.state_at(workdir)
  assert step == K
  run_helpers.assert_same_state(state, run_helpers.state_at(baseline)[1])


def test_ctrl_c_saves_like_sigterm_and_a_second_run_on_the_workdir_is_refused(baseline, tmp_path):
  workdir = str(tmp_path)
  proc = run_helpers.start(workdir, devices=4)
  run_helpers.wait_for(lambda: 1 in run_helpers.logged_steps(workdir), [proc])
  with pytest.raises(lock.WorkdirLocked, match=rf"Another run \(pid {proc.pid} on .*\) is using {workdir}"):
    train.train_and_evaluate(_config(seed=1), workdir)
  run_helpers.send(proc, signal.SIGINT)
  (code,), (out,) = run_helpers.finish([proc])
  assert code == preemption.PREEMPTED_EXIT_CODE, out
  assert "SIGINT received: saving a checkpoint at the next step boundary" in out
  stopped = checkpoint.manager(workdir).latest_step()
  assert 1 <= stopped < K and f"checkpoint saved at step {stopped}" in out
  run_helpers.assert_same_state(run_helpers.state_at(workdir, stopped)[1], run_helpers.state_at(baseline, stopped)[1])
  assert not os.path.exists(os.path.join(workdir, lock.LOCK_FILE))  # released on the way out


def test_rerunning_a_finished_run_appends_no_duplicate_final_row(baseline, tmp_path):
  shutil.copytree(baseline, str(tmp_path), dirs_exist_ok=True)
  metrics = tmp_path / workdir_files.METRICS_FILE
  before = metrics.read_text()
  result = train.train_and_evaluate(_config(knn__networks=("student",)), str(tmp_path))
  assert 0 <= result["knn_top1/student"] <= 100  # evaluated and returned, not logged a second time
  assert metrics.read_text() == before


def _tmp_checkpoints(workdir):
  directory = os.path.join(workdir, "checkpoints")
  return [n for n in os.listdir(directory) if "tmp" in n] if os.path.isdir(directory) else []


@requires_fashion_mnist
@pytest.mark.slow
def test_kill_9_during_an_async_save_and_during_training_leaves_only_complete_checkpoints(baseline, tmp_path):
  workdir = str(tmp_path)
  # 1. kill -9 while orbax writes a checkpoint (its temporary directory exists).
  proc = run_helpers.start(workdir, devices=4)
  run_helpers.wait_for(lambda: any(not n.startswith("1.") for n in _tmp_checkpoints(workdir)), [proc], poll=0.001)
  run_helpers.send(proc, signal.SIGKILL)
  proc.wait()
  left = _tmp_checkpoints(workdir)
  assert left, "the save finished before the kill; the test did not hit a save in flight"
  complete = checkpoint.manager(workdir).all_steps()
  assert all(str(s) not in [n.split(".")[0] for n in left] for s in complete)
  # 2. Restart, then kill -9 again as soon as it has trained a step further.
  resumed_from = max(complete, default=0)
  proc = run_helpers.start(workdir, devices=4)
  run_helpers.wait_for(lambda: any(s > resumed_from + 1 for s in run_helpers.logged_steps(workdir)), [proc])
  run_helpers.send(proc, signal.SIGKILL)
  proc.wait()
  # Every checkpoint that orbax lists restores to exactly the uninterrupted run's state at that step.
  steps = checkpoint.manager(workdir).all_steps()
  assert steps and max(steps) < K
  for step in steps:
    run_helpers.assert_same_state(run_helpers.state_at(workdir, step)[1], run_helpers.state_at(baseline, step)[1])
  # 3. The next start resumes from the last complete one and ends as the uninterrupted run.
  run_helpers.resume(workdir)
  step, state = run_helpers.state_at(workdir)
  assert step == K and not _tmp_checkpoints(workdir)
  run_helpers.assert_same_state(state, run_helpers.state_at(baseline)[1])


@pytest.fixture
def no_compile(monkeypatch):
  """Fails the test if training gets as far as building (and compiling) the train step."""

  def refuse(*args, **kwargs):
    raise AssertionError("the bad input was not caught before compilation")

  monkeypatch.setattr(train, "make_train_step", refuse)


def _config(**changes):
  c = tiny_cli_config.get_config()
  for key, value in changes.items():
    section = c
    parts = key.split("__")
    for part in parts[:-1]:
      section = section[part]
    with section.ignore_type():  # as a config file may build it, wrong types included
      section[parts[-1]] = value
  return c


@pytest.mark.parametrize(
  "changes, message",
  [
    ({"train__batch_size": "16"}, r"config.train.batch_size must be a number, got '16'"),
    ({"train__batch_size": 16.5}, r"config.train.batch_size=16.5 must be a positive integer"),
    ({"optim__momentum": 1.5}, r"config.optim.momentum=1.5 is out of range: it must be >= 0.0 and <= 0.999999"),
    ({"train__keep_checkpoints": 0}, r"config.train.keep_checkpoints=0 must be a positive integer"),
    ({"model__student__depth": 11}, r"config.model.student.depth=11 is not a ResNet depth"),
    ({"data__augment__crop_scale": (0.5, 0.2)}, r"crop_scale=\(0.5, 0.2\) must satisfy 0 < low <= high <= 1"),
    ({"ema__base": 1.2}, r"config.ema.base=1.2 must lie in \[0, 1\]"),
    ({"method": "simdis"}, r"config.method='simdis' is not valid; choose one of"),
    ({"train__batch_size": 12}, r"config.train.batch_size=12 must be divisible by the number of devices \(8\)"),
  ],
)
def test_bad_config_values_are_clear_errors_before_compilation(tmp_path, no_compile, changes, message):
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(_config(**changes), str(tmp_path))


@requires_fashion_mnist
@pytest.mark.parametrize(
  "changes, key",
  [
    ({"method": "simdis_off", "teacher__workdir": "/elsewhere"}, "method"),  # same arrays, other method
    ({"head_combination": "sum"}, "head_combination"),
    ({"model__student__width": 8}, "model.student"),
    ({"data__image_size": 20}, "data.image_size"),  # same arrays, other images: accepted silently before
    ({"train__batch_size": 64}, "train.batch_size"),
  ],
)
def test_resuming_a_checkpoint_of_another_model_or_method_names_the_key(baseline, tmp_path, no_compile, changes, key):
  shutil.copytree(baseline, str(tmp_path), dirs_exist_ok=True)
  with pytest.raises(ValueError, match=rf"config.{key}[ =].*but this config has.*Resume it with --config.{key}[.=]"):
    train.train_and_evaluate(_config(**changes), str(tmp_path))


@requires_fashion_mnist
def test_an_unwritable_workdir_or_a_full_disk_fails_at_start_up(tmp_path, monkeypatch, no_compile):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(OSError, match="is not writable.*choose a directory you can write to"):
    train.train_and_evaluate(_config(), str(blocker / "workdir"))
  monkeypatch.setattr(
    checkpoint.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20)
  )
  with pytest.raises(OSError, match=r"Not enough free disk .*: 1 MiB available, \d+ MiB needed \(8 kept \+ 1"):
    train.train_and_evaluate(_config(), str(tmp_path / "full"))


def test_cluster_detection_and_incomplete_multihost_flags():
  assert parallel.cluster_environment({}) is None
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
  assert parallel.cluster_environment({**slurm, "SLURM_NTASKS": "2"}) == "slurm"
  assert parallel.cluster_environment({**slurm, "SLURM_NTASKS": "1"}) is None
  assert parallel.cluster_environment({"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}) == "tpu_pod"
  assert parallel.cluster_environment({"TPU_WORKER_HOSTNAMES": "localhost"}) is None
  assert not parallel.initialize_distributed()  # a plain host: one process, nothing started
  with pytest.raises(ValueError, match="needs --coordinator_address, --process_id as well"):
    parallel.initialize_distributed(num_processes=2)
  with pytest.raises(ValueError, match=r"--process_id=2 must lie in \[0, --num_processes=2\)"):
    parallel.initialize_distributed("127.0.0.1:1", 2, 2)
