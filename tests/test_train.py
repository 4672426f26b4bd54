"""End to end on real Fashion-MNIST: resume, NaN stop, the offline teacher, the CLI."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import requires_fashion_mnist, tiny_config, xla_flags
from run_helpers import final_state
from simdis_jax import checkpoint, config_files, configuration, train
from simdis_jax import workdir as workdir_files
from simdis_jax.evaluation import alone as alone_lib
from simdis_jax.evaluation import embedding_map, knn
from simdis_jax.offline_teacher import adopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@requires_fashion_mnist
def test_resume_after_a_stop_gives_the_same_final_state(tmp_path):
  c = tiny_config("simdis_on", "simdis_7v")
  c.knn.networks = ()
  train.train_and_evaluate(c, str(tmp_path / "straight"))
  train.train_and_evaluate(c, str(tmp_path / "resumed"), stop_after_steps=2)
  assert checkpoint.manager(str(tmp_path / "resumed")).latest_step() == 2
  train.train_and_evaluate(c, str(tmp_path / "resumed"))
  step_a, a = final_state(str(tmp_path / "straight"))
  step_b, b = final_state(str(tmp_path / "resumed"))
  assert step_a == step_b == 4
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 100
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)
  # Training time adds up over the two processes; the step's FLOPs (XLA cost analysis) are kept.
  logged = [json.loads(l) for l in (tmp_path / "resumed" / workdir_files.METRICS_FILE).read_text().splitlines()]
  times = {l["step"]: l["train_time_s"] for l in logged if "train_time_s" in l}
  assert sorted(times) == [2, 4] and 0 < times[2] < times[4]
  summary = json.loads((tmp_path / "resumed" / workdir_files.SUMMARY_FILE).read_text())
  assert summary["start_step"] == 2 and summary["train_time_s"] >= times[4]
  info = {
    name: json.loads((tmp_path / name / workdir_files.RUN_INFO_FILE).read_text()) for name in ("straight", "resumed")
  }
  assert info["resumed"]["step_flops"] == info["straight"]["step_flops"] > 1e6
  # The libraries that computed the run are on record (a result can be traced to its versions).
  assert info["resumed"]["versions"]["jax"] == jax.__version__ and info["resumed"]["versions"]["simdis_jax"]


@requires_fashion_mnist
def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  c = tiny_config("byol", "byol")
  c.knn.networks = ()
  c.train.steps = 6
  c.train.log_every_steps = 1
  real = train.make_train_step

  def poisoned(*args, **kwargs):
    step_fn = real(*args, **kwargs)

    def wrapped(state, images, labels):
      bad = int(state.step) >= 3
      state, metrics = step_fn(state, images, labels)
      if bad:
        metrics = dict(metrics, loss=metrics["loss"] * np.nan)
      return state, metrics

    return wrapped

  monkeypatch.setattr(train, "make_train_step", poisoned)
  with pytest.raises(FloatingPointError, match=r"step 4.*the last checkpoint \(step 2, verified finite\) is kept"):
    train.train_and_evaluate(c, str(tmp_path))
  assert checkpoint.manager(str(tmp_path)).all_steps() == [2]


@requires_fashion_mnist
def test_offline_student_distils_from_a_finished_byol_teacher(tmp_path):
  teacher = tiny_config("byol", "byol")
  teacher.model.student = teacher.model.teacher
  teacher.knn.networks = ()
  teacher.train.steps = 2
  train.train_and_evaluate(teacher, str(tmp_path / "teacher"))
  _, t_state = final_state(str(tmp_path / "teacher"))

  c = tiny_config("simdis_off", "table2_tema_sv_tema_dv")
  c.knn.networks = ("student", "teacher")
  c.teacher.workdir = str(tmp_path / "teacher")
  result = train.train_and_evaluate(c, str(tmp_path / "student"))
  _, s_state = final_state(str(tmp_path / "student"))
  for key in ("params", "batch_stats", "ema_params", "ema_batch_stats"):
    for x, y in zip(jax.tree.leaves(t_state["student"][key]), jax.tree.leaves(s_state["teacher"][key])):
      np.testing.assert_array_equal(x, y)

  # Standalone kNN on any checkpoint (here the finished teacher run), several k at once.
  out = knn.evaluate_checkpoint(str(tmp_path / "teacher"), ks=(5, 20), train_examples=200, eval_examples=100)
  assert out["step"] == 2 and set(out) == {"step", "knn_top1/k5", "knn_top1/k20"}
  # The distilling run's teacher is the BYOL run's student: its kNN (k=20, same subsets) is the standalone one.
  assert result["knn_top1/teacher"] == out["knn_top1/k20"]
  assert all(abs(out[k] - round(out[k])) < 1e-9 for k in ("knn_top1/k5", "knn_top1/k20"))  # 100 queries
  with pytest.raises(ValueError, match="without a 'teacher' network"):
    knn.evaluate_checkpoint(str(tmp_path / "teacher"), network="teacher", train_examples=200, eval_examples=100)
  with pytest.raises(ValueError, match="k=500 needs at least k memory-bank examples"):
    knn.evaluate_checkpoint(str(tmp_path / "teacher"), ks=(500,), train_examples=200, eval_examples=100)

  # A teacher run of another architecture brings its own network (the run is the truth); the check that
  # runs before anything compiles still names a mismatch; a missing or unfinished teacher: clear errors.
  wrong = tiny_config("simdis_off", "simdis_2v")
  wrong.teacher.workdir = str(tmp_path / "teacher")
  wrong.model.teacher.width = 16
  assert adopt(wrong).model.teacher.width == 8 and adopt(wrong).model.teacher.in_channels == 0
  with pytest.raises(ValueError, match=r"does not match config.model.teacher.*width: run has 8, config wants 16"):
    train.check_offline_teacher(wrong)
  wrong.model.teacher.width = 8
  wrong.teacher.workdir = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="train the teacher first"):
    train.train_and_evaluate(wrong, str(tmp_path / "wrong2"))
  info = json.loads((tmp_path / "teacher" / workdir_files.RUN_INFO_FILE).read_text())
  info["total_steps"] = 10
  (tmp_path / "teacher" / workdir_files.RUN_INFO_FILE).write_text(json.dumps(info))
  wrong.teacher.workdir = str(tmp_path / "teacher")
  with pytest.raises(ValueError, match=r"unfinished \(checkpoint step 2 of 10\)"):
    train.train_and_evaluate(wrong, str(tmp_path / "wrong3"))


@requires_fashion_mnist
def test_a_checkpoint_of_another_method_is_a_clear_error(tiny_run, tmp_path):
  shutil.copytree(tiny_run, str(tmp_path), dirs_exist_ok=True)  # conftest's finished 2-step SimDis-On run
  other = tiny_config("byol", "byol")
  with pytest.raises(
    ValueError, match=r"config.method='simdis_on', but this config has 'byol'.*--config.method=simdis_on "
  ):
    train.train_and_evaluate(other, str(tmp_path))
  assert checkpoint.manager(str(tmp_path)).all_steps() == [1, 2]


@requires_fashion_mnist
def test_cli_runs_the_demo_config_for_a_few_steps(tmp_path):
  """The demo, shortened: SimDis-Off-7v from the zoo's teacher, the student alone beside it, and the table."""
  overrides = [
    "--config.train.steps=3",
    "--config.train.batch_size=32",
    "--config.model.student.width=4",
    "--config.knn.train_examples=300",
    "--config.knn.eval_examples=100",
    "--config.train.log_every_steps=1",
  ]
  env = dict(os.environ, XLA_FLAGS=xla_flags(2))
  proc = subprocess.run(
    [sys.executable, "-m", "simdis_jax.main", "--config", "configs/demo.py", "--workdir", str(tmp_path)] + overrides,
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Finished simdis_off" in proc.stdout and "Finished byol" in proc.stdout
  for workdir in (tmp_path, tmp_path / "alone"):
    lines = [json.loads(l) for l in (workdir / workdir_files.METRICS_FILE).read_text().splitlines()]
    assert [l["step"] for l in lines if "loss" in l] == [1, 2, 3]
    assert all(np.isfinite(l["loss"]) and 0 < l["loss"] < 16 for l in lines if "loss" in l)
    assert checkpoint.manager(str(workdir)).latest_step() == 3
  distilled = json.loads((tmp_path / workdir_files.SUMMARY_FILE).read_text())
  alone = json.loads((tmp_path / "alone" / workdir_files.SUMMARY_FILE).read_text())
  saved = json.loads((tmp_path / "alone" / workdir_files.CONFIG_FILE).read_text())
  assert saved["method"] == "byol" and saved["model"]["student"]["width"] == 4 and saved["train"]["steps"] == 3
  # The frozen teacher is the zoo's network: the same kNN before and after the student's steps.
  assert distilled["knn_top1/teacher_init"] == distilled["knn_top1/teacher"]
  table = proc.stdout[proc.stdout.index("fashion_mnist test top-1 (%), kNN k=20 on 300 training / 100 test") :]
  rows = {line.split("  ")[0]: line.split()[-1] for line in table.splitlines()[3:] if line.strip()}
  assert rows["student distilled (SimDis-Off-7v, 3 steps)"] == f"{distilled['knn_top1/student']:.1f}"
  assert rows["student alone (BYOL, 3 steps)"] == f"{alone['knn_top1/student']:.1f}"
  assert rows["teacher (frozen)"] == f"{distilled['knn_top1/teacher']:.1f}"
  # Both raw-pixel rows are the kNN of the pixels themselves on the same 300 / 100 images, recomputed here.
  demo = config_files.load_config(os.path.join(ROOT, "configs", "demo.py"))
  demo.knn.train_examples, demo.knn.eval_examples = 300, 100
  raw = alone_lib.raw_pixel_knn(demo)
  assert set(raw) == {"normalised", "0..1"}
  for name, value in raw.items():
    assert rows[f"raw pixels ({name}), no network"] == f"{value:.1f}"
  # The report's embedding map of the distilled student (100 points here: the run's kNN queries), and a console
  # of plain text: the markdown and its figure links stay in results.md.
  report = (tmp_path / "report" / "results.md").read_text()
  embedding = embedding_map.file_name(os.path.basename(tmp_path))
  assert embedding in report and (tmp_path / "report" / embedding).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "![" not in proc.stdout


def test_the_demo_table_names_the_split_its_queries_come_from(tmp_path):
  demo = config_files.load_config(os.path.join(ROOT, "configs", "demo.py"))
  workdir_files.write_json(str(tmp_path), workdir_files.SUMMARY_FILE, {"knn_top1/student": 82.8, "steps": 400})
  raw = {"normalised": 82.75}
  assert alone_lib.table(demo, str(tmp_path), raw_knn=raw).splitlines()[1] == (
    "fashion_mnist test top-1 (%), kNN k=20 on 10,000 training / 5,000 test images:"
  )
  demo.data.holdout = "validation"  # the recipe checks: the queries are the 10k held-out training images
  lines = alone_lib.table(demo, str(tmp_path), raw_knn=raw).splitlines()
  assert lines[1] == "fashion_mnist validation top-1 (%), kNN k=20 on 10,000 training / 5,000 validation images:"
  assert lines[4].split() == ["student", "distilled", "(SimDis-Off-7v,", "400", "steps)", "82.8"]
  assert lines[5].split() == ["raw", "pixels", "(normalised),", "no", "network", "82.8"]


def test_the_online_demo_keeps_its_settings():
  """configs/demo_online.py is the SimDis-On-7v demo as it was (its figures in README depend on these values)."""
  c = config_files.load_config(os.path.join(ROOT, "configs", "demo_online.py"))
  assert (c.method, tuple(c.views), c.train.steps, c.train.batch_size, c.seed) == (
    "simdis_on",
    configuration.VIEW_PRESETS["simdis_7v"],
    500,
    128,
    0,
  )
  assert (c.model.student.width, c.model.teacher.width, c.model.student.depth, c.model.teacher.depth) == (8, 12, 10, 10)
  assert (c.optim.name, c.optim.base_lr, c.optim.warmup_epochs, c.optim.weight_decay) == ("lars", 6.0, 0.05, 1e-5)
  assert tuple(c.final_eval.linear_networks) == ("student", "teacher") and not c.final_eval.student_alone
  assert (c.knn.train_examples, c.knn.eval_examples, c.final_eval.linear_train_examples) == (10000, 5000, 10000)


def test_cli_imagenet_preset_without_imagenet_says_how_to_prepare_it(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "simdis_jax.main",
      "--config",
      "configs/imagenet/byol_r18.py",
      "--workdir",
      str(tmp_path / "run"),
      f"--config.data.data_dir={tmp_path / 'tfds'}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode != 0
  assert "imagenet2012" in proc.stderr and "tfds build imagenet2012" in proc.stderr
