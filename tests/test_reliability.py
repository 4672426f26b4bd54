"""Nothing lost, nothing misleading: divergence, resumes, damaged data, clear one-line errors (a checkpoint's own
cases are in tests/test_checkpoint.py, the workdir lock's in tests/test_lock.py)."""

import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

import run_helpers
import tiny_cli_config
from conftest import requires_fashion_mnist
from simdis_jax import checkpoint, resume, train
from simdis_jax import runs as runs_lib
from simdis_jax import workdir as workdir_files
from simdis_jax.data import fashion_mnist
from test_checkpoint import saved


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
      tmp_path / name
    ).write_bytes(open(os.path.join(fashion_mnist.DEBIAN_DIR, name), "rb").read()[:5000])
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
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=run_helpers.ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, PYTHONPATH=run_helpers.ROOT),
  )


def test_an_unknown_config_key_or_an_empty_workdir_is_one_line_naming_the_fix(tmp_path):
  proc = _cli("--config", run_helpers.CONFIG, "--workdir", str(tmp_path), "--config.train.foo=1")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
  assert proc.stderr.strip().splitlines() == [
    "FATAL Flags parsing error: --config.train.foo: config.train has no key 'foo'. Valid keys of config.train: "
    "batch_size, checkpoint_every_steps, epochs, keep_checkpoints, knn_every_steps, log_every_steps, steps."
  ]
  proc = _cli("--config", run_helpers.CONFIG, "--workdir=")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert "--workdir is empty (an unset shell variable?)" in proc.stderr
  assert not os.listdir(tmp_path)


def test_knn_of_a_missing_step_lists_the_steps(tmp_path):
  saved(str(tmp_path), steps=(1, 2))
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
  with pytest.raises(
    RuntimeError,
    match=r"Every example of a batch .* failed to decode, e.g. .*garbage\d+.jpg, "
    r".*garbage\d+.jpg, .*garbage\d+.jpg: check that these are readable",
  ):
    collect(pipeline.load(data).train_batches(0, 0, 16, parallel.make_mesh()), 1)


def test_the_final_table_puts_the_raw_pixel_baselines_beside_the_figures(tmp_path):
  from simdis_jax.evaluation import final  # pylint: disable=import-outside-toplevel

  workdir_files.write_json(
    str(tmp_path), workdir_files.SUMMARY_FILE, {"knn_top1/student": 80.04, "knn_top1/teacher": 81.0}
  )
  table = final.what_the_numbers_mean(tiny_cli_config.get_config(), str(tmp_path), {"student": {"top1": 82.26}})
  assert table.splitlines()[-3:] == [
    "| student | 80.0 | 82.3 |",
    "| teacher | 81.0 | - |",
    "| raw pixels, no training (python -m simdis_jax.evaluation.raw_pixels --holdout none) | 85.7 | 83.1 |",
  ]


def test_a_missing_run_info_is_named_not_called_no_checkpoint(tmp_path):
  workdir = str(tmp_path)
  saved(workdir, steps=(1, 2, 3))
  workdir_files.write_config(workdir, tiny_cli_config.get_config())
  with pytest.raises(
    FileNotFoundError,
    match=r"has checkpoints \(steps \[1, 2, 3\]\) but its run_info.json is "
    r"missing.*--config.pretrained.allow_unfinished=True",
  ):
    runs_lib.check_finished(workdir, "config.pretrained.workdir", allow_flag="--config.pretrained.allow_unfinished")
  assert runs_lib.check_finished(workdir, "x", allow_unfinished=True)[1] == 3


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
  for size, message in (
    (1, r"image_size=1 is too small for config.model.student \(down-sampling 8x"),
    (100000, r"image_size=100000 is absurdly large \(at most 2048"),
  ):
    config.data.image_size = size
    with pytest.raises(ValueError, match=message):
      train.train_and_evaluate(config, str(tmp_path / str(size)))
  config.model.student.cifar_stem = False
  config.data.image_size = 8
  with pytest.raises(ValueError, match=r"use --config.data.image_size>=16 \(or --config.model.student.cifar_stem"):
    runs_lib.check_image_size(config)
