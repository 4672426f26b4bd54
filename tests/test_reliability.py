"""Nothing lost, nothing misleading: damaged checkpoints, NaN, two runs on one workdir, clear one-line errors."""

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags
from ml_collections import config_flags

import run_helpers
import tiny_cli_config
from conftest import requires_fashion_mnist
from simdis_jax import checkpoint, lock, resume, train
from simdis_jax import runs as runs_lib
from simdis_jax import workdir as workdir_files
from simdis_jax.data import fashion_mnist


def _state(scale=1.0, width=64):
  rng = np.random.default_rng(0)
  return {"w": jnp.asarray(rng.normal(size=(width, 300)).astype(np.float32) * scale),
          "bn": {"var": jnp.ones((width,)), "mean": jnp.zeros((width,))}, "step": jnp.int32(0)}


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def _saved(workdir, steps=(1, 2, 3, 4, 5)):
  """A workdir with one small random state per step (state of step s = _state(s))."""
  mgr = checkpoint.manager(workdir, keep=10)
  for s in steps:
    checkpoint.save(mgr, s, _state(s))
  mgr.wait_until_finished()
  return mgr


def _largest_data_file(workdir, step):
  return max(glob.glob(f"{workdir}/checkpoints/{step}/default/ocdbt.process_0/d/*"), key=os.path.getsize)


def truncate(workdir, step):
  path = _largest_data_file(workdir, step)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def flip_bit(workdir, step):
  path = _largest_data_file(workdir, step)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x40
  open(path, "wb").write(bytes(data))


DAMAGE = {
    "truncated array file": (truncate, "unreadable"),
    "deleted _METADATA": (lambda w, s: os.remove(f"{w}/checkpoints/{s}/default/_METADATA"), "unreadable metadata"),
    "deleted manifest.ocdbt": (lambda w, s: os.remove(f"{w}/checkpoints/{s}/default/manifest.ocdbt"), "unreadable"),
    "bit flip": (flip_bit, "checksum mismatch"),
}


def test_a_bit_flip_restores_silently_in_orbax_itself(tmp_path):
  """Why the CRC record exists: orbax reads a flipped bit in an array file back without complaint."""
  mgr = _saved(str(tmp_path), steps=(1,))
  flip_bit(str(tmp_path), 1)
  restored = mgr.restore(1, args=ocp.args.StandardRestore(_abstract(_state())))
  assert not np.array_equal(np.asarray(restored["w"]), np.asarray(_state(1)["w"]))


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_step(tmp_path, damage, caplog):
  workdir = str(tmp_path)
  mgr = _saved(workdir)
  harm, reason = DAMAGE[damage]
  harm(workdir, 5)
  harm(workdir, 4)
  restored = checkpoint.restore_latest(mgr, _abstract(_state()))
  np.testing.assert_array_equal(restored["w"], _state(3)["w"])
  assert f"step 5: {reason}" in caplog.text and f"step 4: {reason}" in caplog.text
  # The damaged steps are moved aside (kept, not deleted), so training saves steps 4 and 5 anew.
  assert mgr.all_steps() == [1, 2, 3]
  assert sorted(os.listdir(glob.glob(f"{workdir}/{checkpoint.DAMAGED_DIR}/*")[0])) == [
      "4", "4.checksums.json", "5", "5.checksums.json"]
  checkpoint.save(mgr, 4, _state(4))
  mgr.wait_until_finished()


def test_a_checkpoint_of_another_model_is_a_mismatch_not_damage(tmp_path):
  mgr = _saved(str(tmp_path), steps=(1, 2))
  with pytest.raises(checkpoint.CheckpointMismatch,
                     match=r"step 2 .* another model/method/optimizer: 3 arrays of other shapes \(e.g. bn/mean: "
                           r"checkpoint \(64,\), this run \(32,\)\)"):
    checkpoint.restore_latest(mgr, _abstract(_state(width=32)))
  assert mgr.all_steps() == [1, 2]  # nothing moved


def test_every_step_damaged_is_one_clear_error_and_nothing_is_moved(tmp_path):
  workdir = str(tmp_path)
  mgr = _saved(workdir, steps=(1, 2))
  truncate(workdir, 1)
  flip_bit(workdir, 2)
  with pytest.raises(checkpoint.NoIntactCheckpoint, match=r"step 2: checksum mismatch .*step 1: unreadable"):
    checkpoint.restore_latest(mgr, _abstract(_state()))
  assert mgr.all_steps() == [1, 2]


def test_a_chosen_step_is_verified_too_and_a_damaged_one_names_the_others(tmp_path):
  """runs.restore (teacher, kNN, linear evaluation, export) reads one given step: damage is an error, never used."""
  workdir = str(tmp_path)
  mgr = _saved(workdir, steps=(1, 2, 3))
  flip_bit(workdir, 2)
  np.testing.assert_array_equal(checkpoint.restore_step(mgr, 3, _abstract(_state()))["w"], _state(3)["w"])
  with pytest.raises(checkpoint.NoIntactCheckpoint,
                     match=r"step 2 .* is damaged: checksum mismatch .* Its other steps are \[1, 3\]\."):
    checkpoint.restore_step(mgr, 2, _abstract(_state()))
  with pytest.raises(checkpoint.CheckpointMismatch, match=r"step 3 .* does not hold this run's networks"):
    checkpoint.restore_step(mgr, 3, _abstract(_state(width=32)))
  assert mgr.all_steps() == [1, 2, 3]  # nothing moved: a chosen step is the user's to replace


def test_a_non_finite_state_is_never_saved(tmp_path):
  mgr = checkpoint.manager(str(tmp_path))
  bad = _state()
  bad["bn"]["var"] = bad["bn"]["var"].at[3].set(jnp.inf)
  with pytest.raises(FloatingPointError, match=r"step 7 holds NaN/Inf in 1 arrays \(e.g. bn/var\)"):
    checkpoint.save(mgr, 7, bad)
  mgr.wait_until_finished()
  assert mgr.all_steps() == []


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


def test_resume_advice_is_a_flag_that_parses(tmp_path):
  run = tiny_cli_config.get_config()
  workdir_files.write_config(str(tmp_path), run)
  other = tiny_cli_config.get_config()
  other.model.student.width = 8
  other.views = ("s_dv", "t_sv")
  for key in ("views", "model.student"):
    with pytest.raises(ValueError) as e:
      resume.check_resume_config(str(tmp_path), other)
    advice = str(e.value).split("Resume it with ")[1].split(" (the config")[0]
    argv = ["main", f"--config={run_helpers.CONFIG}", *shlex.split(advice)]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
    values(argv)
    parsed = values.config
    if key == "views":
      assert parsed.views == run.views and advice.startswith("--config.views=")
      other.views = run.views
    else:
      assert advice == f"--config.model.student.width={run.model.student.width}"
      assert parsed.model.student.width == run.model.student.width


@requires_fashion_mnist
def test_a_corrupt_fashion_mnist_file_is_named(tmp_path):
  for name in fashion_mnist.FILES.values():
    shutil.copy(os.path.join(fashion_mnist.DEBIAN_DIR, name), tmp_path / name) if name.startswith("t10k") else (
        tmp_path / name).write_bytes(open(os.path.join(fashion_mnist.DEBIAN_DIR, name), "rb").read()[:5000])
  with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz is damaged .*Reinstall"):
    fashion_mnist.load(str(tmp_path))


@requires_fashion_mnist
def test_a_diverging_run_stops_naming_a_finite_kept_step(tmp_path):
  config = tiny_cli_config.get_config()
  config.optim.base_lr = 1e6
  with run_helpers.local_devices(4), pytest.raises(FloatingPointError) as e:
    train.train_and_evaluate(config, str(tmp_path))
  mgr = checkpoint.manager(str(tmp_path))
  kept = mgr.latest_step()
  assert f"the last checkpoint (step {kept}, verified finite) is kept" in str(e.value)
  assert kept < tiny_cli_config.STEPS
  for step in mgr.all_steps():  # every step kept restores finite
    leaves = run_helpers.state_at(str(tmp_path), step)[1]
    assert all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.floating))


def _cli(*args, module="simdis_jax.main"):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=run_helpers.ROOT, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, PYTHONPATH=run_helpers.ROOT))


def test_an_unknown_config_key_or_an_empty_workdir_is_one_line_naming_the_fix(tmp_path):
  proc = _cli("--config", run_helpers.CONFIG, "--workdir", str(tmp_path), "--config.train.foo=1")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
  assert proc.stderr.strip().splitlines() == [
      "FATAL Flags parsing error: --config.train.foo: config.train has no key 'foo'. Valid keys of config.train: "
      "batch_size, checkpoint_every_steps, epochs, keep_checkpoints, knn_every_steps, log_every_steps, steps."]
  proc = _cli("--config", run_helpers.CONFIG, "--workdir=")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert "--workdir is empty (an unset shell variable?)" in proc.stderr
  assert not os.listdir(tmp_path)


def test_knn_of_a_missing_step_lists_the_steps(tmp_path):
  _saved(str(tmp_path), steps=(1, 2))
  proc = _cli("--workdir", str(tmp_path), "--step", "999", module="simdis_jax.evaluation.knn")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert f"knn: {tmp_path} has no checkpoint at step 999; its steps are [1, 2]." in proc.stderr


def test_imagenet_without_its_data_leaves_no_checkpoints_folder_or_lock(tmp_path):
  config = tiny_cli_config.get_config()
  config.data.name = "imagenet2012"
  config.data.data_dir = str(tmp_path / "tfds")
  config.probe.num_classes = 1000
  with pytest.raises(FileNotFoundError, match="tfds build imagenet2012"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert os.listdir(tmp_path / "run") == []


def test_folder_warnings_name_each_unreadable_file_once_and_an_all_corrupt_folder_names_files(tmp_path, caplog):
  import logging  # pylint: disable=import-outside-toplevel
  from test_pipeline import collect, make_folder  # pylint: disable=import-outside-toplevel
  from simdis_jax import configuration, parallel  # pylint: disable=import-outside-toplevel
  from simdis_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  data = configuration.data_config("folder")
  data.folder = str(make_folder(tmp_path / "frames", good=30, bad=("garbage.jpg", "truncated.jpg")))
  data.image_size = 24
  with caplog.at_level(logging.WARNING):
    collect(pipeline.load(data).train_batches(0, 0, 16, parallel.make_mesh()), 4)  # two epochs
  assert caplog.text.count("garbage.jpg") == 1 and caplog.text.count("truncated.jpg") == 1
  data.folder = str(make_folder(tmp_path / "bad", good=0, bad=[f"garbage{i}.jpg" for i in range(16)]))
  with pytest.raises(RuntimeError, match=r"Every example of a batch .* failed to decode, e.g. .*garbage\d+.jpg, "
                                         r".*garbage\d+.jpg, .*garbage\d+.jpg: check that these are readable"):
    collect(pipeline.load(data).train_batches(0, 0, 16, parallel.make_mesh()), 1)


def test_the_final_table_puts_the_raw_pixel_baselines_beside_the_figures(tmp_path):
  from simdis_jax.evaluation import final  # pylint: disable=import-outside-toplevel
  workdir_files.write_json(str(tmp_path), workdir_files.SUMMARY_FILE,
                           {"knn_top1/student": 80.04, "knn_top1/teacher": 81.0})
  table = final.what_the_numbers_mean(tiny_cli_config.get_config(), str(tmp_path), {"student": {"top1": 82.26}})
  assert table.splitlines()[-3:] == ["| student | 80.0 | 82.3 |", "| teacher | 81.0 | - |",
                                     "| raw pixels, no training (python -m simdis_jax.evaluation.raw_pixels "
                                     "--holdout none) | 85.7 | 83.1 |"]


# ---------------------------------------------------------------- one verified restore for every reader


def test_a_step_without_checksums_is_restored_as_unverified_in_one_line_never_called_verified(tmp_path, caplog):
  """As for a checkpoint written before checksums existed: a bit flip cannot be seen, so it is said, not hidden."""
  workdir = str(tmp_path)
  mgr = _saved(workdir, steps=(1, 2))
  os.remove(f"{workdir}/{checkpoint.CHECKSUM_DIR}/2.json")
  flip_bit(workdir, 2)
  checkpoint.restore_latest(mgr, _abstract(_state()))
  lines = [r.getMessage() for r in caplog.records if "UNVERIFIED" in r.getMessage()]
  assert len(lines) == 1 and "step 2" in lines[0] and "no checksum file" in lines[0]
  assert not checkpoint.has_checksums(mgr, 2) and checkpoint.has_checksums(mgr, 1)
  stop = str(checkpoint.diverged(7, "Non-finite metrics", 2, train.DIVERGED_ADVICE, verified=False))
  assert "verified finite" not in stop and "restored UNVERIFIED (no checksum file): it may be damaged" in stop


@pytest.mark.parametrize("harm", ["truncated", "deleted arrays"])
def test_a_damaged_checksum_file_is_a_damaged_step_and_the_run_falls_back(tmp_path, caplog, harm):
  workdir = str(tmp_path)
  mgr = _saved(workdir, steps=(1, 2, 3))
  path = f"{workdir}/{checkpoint.CHECKSUM_DIR}/3.json"
  text = open(path).read()
  open(path, "w").write(text[:len(text) // 2] if harm == "truncated" else "[1, 2]")
  restored = checkpoint.restore_latest(mgr, _abstract(_state()))
  np.testing.assert_array_equal(restored["w"], _state(2)["w"])
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "skipping" in r.getMessage()]
  assert len(warnings) == 1 and f"step 3: its checksum file {path} is unreadable" in warnings[0]
  assert mgr.all_steps() == [1, 2]


def test_readers_walk_back_past_a_bit_flip_with_one_warning_and_list_the_steps_of_a_missing_one(tmp_path, caplog):
  """checkpoint.restore_verified (API, export, kNN, linear evaluation, teacher): nothing is moved in a run it reads."""
  workdir = str(tmp_path)
  mgr = _saved(workdir, steps=(1, 2, 3))
  flip_bit(workdir, 3)
  state, step = checkpoint.restore_verified(mgr, _abstract(_state()))
  assert step == 2
  np.testing.assert_array_equal(state["w"], _state(2)["w"])
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "step 3" in warnings[0] and "checksum mismatch" in warnings[0]
  assert "using step 2, the newest intact one" in warnings[0]
  assert mgr.all_steps() == [1, 2, 3]
  partial = {"w": _abstract(_state())["w"]}  # one array alone, as the embedding API reads one network
  assert checkpoint.restore_verified(checkpoint.manager(workdir), partial, partial=True)[1] == 2
  with pytest.raises(ValueError, match=r"has no checkpoint at step 999; its steps are \[1, 2, 3\]"):
    checkpoint.restore_verified(mgr, _abstract(_state()), 999)
  with pytest.raises(checkpoint.NoIntactCheckpoint, match=r"step 3 .* is damaged: checksum mismatch"):
    checkpoint.restore_verified(mgr, _abstract(_state()), 3)


def test_a_missing_run_info_is_named_not_called_no_checkpoint(tmp_path):
  workdir = str(tmp_path)
  _saved(workdir, steps=(1, 2, 3))
  workdir_files.write_config(workdir, tiny_cli_config.get_config())
  with pytest.raises(FileNotFoundError, match=r"has checkpoints \(steps \[1, 2, 3\]\) but its run_info.json is "
                                              r"missing.*--config.pretrained.allow_unfinished=True"):
    runs_lib.check_finished(workdir, "config.pretrained.workdir", allow_flag="--config.pretrained.allow_unfinished")
  assert runs_lib.check_finished(workdir, "x", allow_unfinished=True)[1] == 3


def test_metrics_appends_survive_a_line_cut_by_a_crash(tmp_path):
  workdir = str(tmp_path)
  workdir_files.append_metrics(workdir, 1, {"loss": 1.5})
  with open(tmp_path / workdir_files.METRICS_FILE, "a") as f:
    f.write('{"step": 2, "loss": 1.')  # kill -9 mid-write
  workdir_files.append_metrics(workdir, 3, {"loss": 0.5})
  assert workdir_files.read_metrics(workdir) == {1: {"loss": 1.5}, 3: {"loss": 0.5}}


def test_a_resume_under_an_allowed_change_keeps_each_segments_config(tmp_path):
  workdir = str(tmp_path)
  first = tiny_cli_config.get_config()
  resume.record_config(workdir, first, 0)
  assert not os.path.exists(tmp_path / resume.SEGMENTS_FILE)  # an unchanged run writes only config.json
  second = tiny_cli_config.get_config()
  second.train.log_every_steps = 7
  resume.check_resume_config(workdir, second)  # allowed: it changes neither the checkpoint nor the data
  resume.record_config(workdir, second, 4)
  segments = resume.segments(workdir)
  assert [s["from_step"] for s in segments] == [0, 4]
  assert [s["config"]["train"]["log_every_steps"] for s in segments] == [first.train.log_every_steps, 7]
  assert workdir_files.read_config(workdir)["train"]["log_every_steps"] == 7
  for key, value in (("data.image_size", 20), ("train.batch_size", 64), ("data.augment.flip", False)):
    third = tiny_cli_config.get_config()
    section = third
    *parents, leaf = key.split(".")
    for p in parents:
      section = section[p]
    section[leaf] = value
    with pytest.raises(ValueError, match=rf"config.{key.rsplit('.', 1)[0] if 'augment' in key else key}"):
      resume.check_resume_config(workdir, third)


def test_image_sizes_are_bounded_by_the_network(tmp_path):
  config = tiny_cli_config.get_config()
  for size, message in ((1, r"image_size=1 is too small for config.model.student \(down-sampling 8x"),
                        (100000, r"image_size=100000 is absurdly large \(at most 2048")):
    config.data.image_size = size
    with pytest.raises(ValueError, match=message):
      train.train_and_evaluate(config, str(tmp_path / str(size)))
  config.model.student.cifar_stem = False
  config.data.image_size = 8
  with pytest.raises(ValueError, match=r"use --config.data.image_size>=16 \(or --config.model.student.cifar_stem"):
    runs_lib.check_image_size(config)


FULL_DISK = r"""
import json, resource, signal, sys
import numpy as np
import jax.numpy as jnp
from simdis_jax import checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) as on a full disk
workdir = sys.argv[1]
state = lambda seed: {"w": jnp.asarray(np.random.default_rng(seed).normal(size=(1 << 17,)).astype(np.float32))}
mgr = checkpoint.manager(workdir, keep=5)
checkpoint.save(mgr, 1, state(1))
mgr.wait_until_finished()
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))  # no file may grow past 64 KiB now
error = None
try:
  checkpoint.save(mgr, 2, state(2))
  checkpoint.save(mgr, 3, state(3))
  checkpoint.finish(mgr)
except OSError as e:
  error = str(e)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
mgr = checkpoint.manager(workdir, keep=5)
restored = checkpoint.restore_latest(mgr, {"w": jnp.zeros((1 << 17,), jnp.float32)})
print(json.dumps({"error": error, "steps": mgr.all_steps(),
                  "intact": bool(np.array_equal(np.asarray(restored["w"]), np.asarray(state(1)["w"])))}))
"""


def test_a_save_that_runs_out_of_disk_is_one_line_and_loses_nothing(tmp_path):
  """The async save's failure (tensorstore's 1.8 KB RESOURCE_EXHAUSTED line before) is one OSError naming the fix."""
  proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path / "w")], capture_output=True, text=True,
                        timeout=300, cwd=run_helpers.ROOT, env=dict(os.environ, PYTHONPATH=run_helpers.ROOT))
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["error"] == (
      f"Saving a checkpoint in {tmp_path / 'w' / 'checkpoints'} failed: a file outgrew the size limit (File too "
      "large); the checkpoints saved before it (steps [1]) are intact. Free space (or lower "
      "--config.train.keep_checkpoints) and run the same command to resume.")
  assert result["steps"] == [1] and result["intact"]
