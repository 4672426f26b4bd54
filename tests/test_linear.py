"""Linear evaluation: the classifier on known-separable features, real runs (fast/full), errors, configs."""

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import requires_fashion_mnist, tiny_config
from simdis_jax import checkpoint, parallel, preemption, runs, train
from simdis_jax import workdir as workdir_files
from simdis_jax.data import input as data_input
from simdis_jax.evaluation import classifier as classifier_lib
from simdis_jax.evaluation import features, linear, linear_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINEAR_CONFIGS = ("configs/fashion_mnist/linear_eval.py", "configs/imagenet/linear_eval.py")


def load_config_file(path, arg=None):
  """A shipped config file's get_config(arg) and its module docstring."""
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return (module.get_config() if arg is None else module.get_config(arg)), module.__doc__


def gaussian_clusters(seed, n, num_classes=10, dim=16):
  """Linearly separable up to ~0.7% overlap by construction: fixed class means 1.5 apart per axis, unit noise."""
  rng = np.random.default_rng(seed)
  means = np.random.default_rng(123).normal(size=(num_classes, dim)) * 1.5
  labels = rng.integers(0, num_classes, n)
  return (means[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels.astype(np.int32)


@pytest.mark.parametrize("protocol", ["authors", "deepmind"])
def test_classifier_separates_linearly_separable_features(protocol):
  c = linear_config.apply_protocol(linear_config.base_config(), protocol)
  c.train.epochs = 8.0
  c.train.batch_size = 64
  train_x, train_y = gaussian_clusters(0, 4096)
  test_x, test_y = gaussian_clusters(1, 1024)
  classifier, state = classifier_lib.train_on_features(c, train_x, train_y, 10, parallel.make_mesh())
  assert int(state.step) == 8 * (4096 // 64)
  acc = classifier_lib.evaluate_features(classifier, state, test_x, test_y)
  assert acc["top1"] >= 98.0, acc
  assert acc["top5"] >= acc["top1"]
  assert ("bn" in state.params) == (protocol == "authors")
  # The same classifier before training is at chance: the accuracy above was learned.
  tx, _ = classifier_lib.make_optimizer(c, int(state.step))
  untrained = classifier_lib.evaluate_features(
    classifier, classifier_lib.init_state(classifier, tx, 16, c.seed), test_x, test_y
  )
  assert untrained["top1"] < 40.0, untrained


def test_topk_accuracy_counts_hits_in_the_top_five():
  scores = np.tile(np.arange(10.0), (3, 1))  # class 9 best, then 8, 7, ...
  acc = classifier_lib.topk_accuracy(scores, np.array([9, 5, 0]))
  assert acc == {"top1": pytest.approx(100 / 3), "top5": pytest.approx(200 / 3)}


def test_validate_rejects_bad_values_and_mismatched_protocols():
  c = linear_config.base_config()
  c.unlock()
  c.train.batchsize = 3
  with pytest.raises(ValueError, match=r"Unknown config key 'train.batchsize'"):
    linear_config.validate(c)
  c = linear_config.base_config()
  c.mode = "cached"
  with pytest.raises(ValueError, match=r"config.mode='cached'.*fast.*full"):
    linear_config.validate(c)
  c = linear_config.base_config()
  c.pretrained.weights = "target"
  with pytest.raises(ValueError, match=r"pretrained.weights.*online.*ema"):
    linear_config.validate(c)
  c = linear_config.base_config()
  c.protocol = "deepmind"  # the other keys still say "authors": a mislabelled result
  with pytest.raises(ValueError, match=r"protocol='deepmind'.*classifier.batch_norm.*apply_protocol.*custom"):
    linear_config.validate(c)
  c.protocol = "custom"
  linear_config.validate(c)
  assert linear_config.validate(linear_config.apply_protocol(linear_config.base_config(), "deepmind")).optim.nesterov


@pytest.mark.parametrize("path", LINEAR_CONFIGS)
def test_shipped_linear_configs_validate_and_document_their_command(path):
  c, doc = load_config_file(path)
  linear_config.validate(c)
  assert f"python -m simdis_jax.main --config {path}" in doc
  assert (c.task, c.protocol, c.train.batch_size, c.classifier.batch_norm) == ("linear_eval", "authors", 256, True)
  for arg in ("authors,fast", "deepmind,full"):
    linear_config.validate(load_config_file(path, arg)[0])
  with pytest.raises(ValueError, match="protocol"):
    load_config_file(path, "simclr,fast")


def test_imagenet_preset_is_the_papers_setting():
  c, _ = load_config_file("configs/imagenet/linear_eval.py")
  assert (c.mode, c.train.epochs, c.optim.base_lr, c.optim.momentum, c.optim.weight_decay) == (
    "full",
    80.0,
    0.001,
    0.9,
    0.0,
  )
  assert (c.data.name, c.data.image_size, c.data.augment.eval_crop_fraction) == ("imagenet2012", 224, 0.875)


def test_imagenet_linear_eval_without_the_dataset_stops_at_once(tmp_path):
  c, _ = load_config_file("configs/imagenet/linear_eval.py")
  c.pretrained.workdir = str(tmp_path / "pretrained")
  c.data.data_dir = str(tmp_path / "tfds")
  with pytest.raises(FileNotFoundError, match="imagenet2012.*not prepared"):
    linear.run(c, str(tmp_path / "linear"))


# ------------------------------------------------------------ real runs


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """A finished 2-step BYOL run and an unfinished copy of it (its step-2 checkpoint removed, as if preempted)."""
  root = tmp_path_factory.mktemp("pretrained")
  c = tiny_config("byol", "byol")
  c.knn.networks = ()
  c.train.steps = 2
  c.train.checkpoint_every_steps = 1
  finished = str(root / "finished")
  train.train_and_evaluate(c, finished)
  unfinished = str(root / "unfinished")
  shutil.copytree(finished, unfinished)
  shutil.rmtree(os.path.join(unfinished, "checkpoints", "2"))
  return {"finished": finished, "unfinished": unfinished}


def small_config(pretrained_workdir, mode="fast", protocol="authors"):
  """One small epoch over a 256-image subset of the pretraining run's data (inherited: data.name='')."""
  c = linear_config.apply_protocol(linear_config.base_config(), protocol)
  c.mode = mode
  c.pretrained.workdir = pretrained_workdir
  c.train.epochs = 1.0
  c.train.batch_size = 32
  c.train.log_every_steps = 2
  c.train.checkpoint_every_steps = 4
  c.eval.batch_size = 64
  c.data.train_examples = 256
  c.data.eval_examples = 128
  return c


def pretrained_encoder(workdir):
  """The student's online encoder params in the run's latest checkpoint, as host arrays."""
  mgr = checkpoint.manager(workdir)
  restored = mgr.restore(mgr.latest_step(), args=checkpoint.ocp.args.StandardRestore())
  mgr.close()
  return jax.tree.map(np.asarray, restored["student"]["params"]["encoder"])


def rescored(linear_workdir, c):
  """Top-1/top-5 recomputed apart from the run: its last checkpoint's classifier on freshly extracted features."""
  mesh = parallel.make_mesh()
  pre = runs.restore(c.pretrained.workdir, mesh)
  data = pre.config.data
  dataset = data_input.load_dataset(data)
  variables = features.encoder_variables(getattr(pre.state, c.pretrained.network), c.pretrained.weights)
  fn = functools.partial(
    features.make_feature_fn(
      getattr(pre.networks, c.pretrained.network), dataset.device_augment_config(data.augment), data.image_size, mesh
    ),
    variables,
  )
  feats, labels = features.extract_features(
    fn, dataset.eval_batches("eval", c.data.eval_examples, c.eval.batch_size, mesh, c.seed)
  )
  mgr = checkpoint.manager(linear_workdir)
  saved = mgr.restore(mgr.latest_step(), args=checkpoint.ocp.args.StandardRestore())
  mgr.close()
  state = classifier_lib.ClassifierState(
    saved["step"], saved["rng"], saved["params"], saved.get("batch_stats") or {}, None
  )
  classifier = classifier_lib.make_classifier(c, dataset.num_classes)
  return classifier_lib.evaluate_features(classifier, state, feats, labels), labels.shape[0]


@pytest.fixture(scope="module")
def fast_run(pretrained, tmp_path_factory):
  """One straight fast-mode run (authors' protocol), with the pretrained encoder read before and after it."""
  before = pretrained_encoder(pretrained["finished"])
  workdir = str(tmp_path_factory.mktemp("fast") / "linear")
  result = linear.run(small_config(pretrained["finished"]), workdir)
  return {"workdir": workdir, "result": result, "before": before, "after": pretrained_encoder(pretrained["finished"])}


@requires_fashion_mnist
def test_fast_run_keeps_the_encoder_writes_results_and_reruns_only_the_evaluation(pretrained, fast_run):
  for x, y in zip(jax.tree.leaves(fast_run["before"]), jax.tree.leaves(fast_run["after"]), strict=True):
    np.testing.assert_array_equal(x, y)
  workdir, result = fast_run["workdir"], fast_run["result"]
  saved = json.loads(open(os.path.join(workdir, workdir_files.LINEAR_EVAL_FILE)).read())
  for key in (
    "pretrained_workdir",
    "network",
    "weights",
    "protocol",
    "mode",
    "mode_name",
    "epochs",
    "batch_size",
    "top1",
    "top5",
    "train_top1",
    "wall_time_s",
    "feature_dim",
  ):
    assert key in saved, key
  assert (saved["network"], saved["weights"], saved["protocol"], saved["mode"]) == (
    "student",
    "online",
    "authors",
    "fast",
  )
  assert saved["mode_name"] == "fast (cached features, no augmentation)"
  assert (saved["steps"], saved["epochs"], saved["trained_steps"]) == (8, 1.0, 8)
  assert saved["feature_dim"] == 4 * 8  # ResNet-10 of width 4: 8x width after the last stage
  # The reported figures are those of the checkpointed classifier on the held-out split, recomputed apart.
  again, count = rescored(workdir, small_config(pretrained["finished"]))
  assert (saved["top1"], saved["top5"]) == (again["top1"], again["top5"]) and count == saved["eval_examples"] == 128
  lines = [json.loads(l) for l in open(os.path.join(workdir, workdir_files.METRICS_FILE))]
  assert [l["step"] for l in lines if "loss" in l] == [2, 4, 6, 8]

  # The linear checkpoint holds the classifier only: the encoder is never an optimized parameter.
  mgr = checkpoint.manager(workdir)
  assert mgr.latest_step() == 8
  ckpt = mgr.restore(8, args=checkpoint.ocp.args.StandardRestore())
  mgr.close()
  assert set(ckpt["params"]) == {"linear", "bn"}

  rerun = linear.run(small_config(pretrained["finished"]), workdir)
  assert rerun["trained_steps"] == 0
  assert (rerun["top1"], rerun["top5"]) == (result["top1"], result["top5"])
  assert len(open(os.path.join(workdir, workdir_files.METRICS_FILE)).readlines()) == len(lines) + 1


@requires_fashion_mnist
def test_fast_run_resumed_after_a_stop_matches_a_straight_run(pretrained, fast_run, tmp_path):
  stopped = linear.run(small_config(pretrained["finished"]), str(tmp_path), stop_after_steps=3)
  assert (stopped["steps"], stopped["finished"]) == (3, False)
  assert not os.path.exists(tmp_path / workdir_files.LINEAR_EVAL_FILE)
  resumed = linear.run(small_config(pretrained["finished"]), str(tmp_path))
  assert resumed["trained_steps"] == 5
  straight = fast_run["result"]
  assert (resumed["top1"], resumed["top5"], resumed["train_top1"]) == (
    straight["top1"],
    straight["top5"],
    straight["train_top1"],
  )


@requires_fashion_mnist
def test_missing_unfinished_and_wrong_pretraining_runs_are_clear_errors(pretrained, tmp_path):
  c = small_config("")
  with pytest.raises(ValueError, match="pretrained.workdir is not set"):
    linear.run(c, str(tmp_path / "a"))
  c = small_config(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="does not exist.*pretrained.workdir"):
    linear.run(c, str(tmp_path / "b"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="not a pretraining workdir"):
    linear.run(small_config(str(tmp_path / "empty")), str(tmp_path / "c"))
  with pytest.raises(ValueError, match=r"unfinished \(checkpoint step 1 of 2\).*allow_unfinished=True"):
    linear.run(small_config(pretrained["unfinished"]), str(tmp_path / "d"))
  c = small_config(pretrained["finished"])
  c.pretrained.network = "teacher"
  with pytest.raises(ValueError, match="has no teacher.*network=student"):
    linear.run(c, str(tmp_path / "e"))
  c = small_config(pretrained["finished"])
  c.pretrained.step = 5
  with pytest.raises(ValueError, match=r"no checkpoint at step 5; its steps are \[1, 2\]"):
    linear.run(c, str(tmp_path / "f"))


@requires_fashion_mnist
def test_full_mode_trains_a_few_augmented_steps_over_the_frozen_ema_encoder(pretrained, tmp_path):
  c = small_config(pretrained["finished"], mode="full", protocol="deepmind")
  c.pretrained.weights = "ema"
  c.train.steps = 3
  c.train.checkpoint_every_steps = 2
  result = linear.run(c, str(tmp_path))
  assert (result["mode"], result["weights"], result["steps"], result["trained_steps"]) == ("full", "ema", 3, 3)
  assert result["mode_name"].startswith("full")
  again, _ = rescored(str(tmp_path), c)  # the EMA encoder's features, as the run used them
  assert (result["top1"], result["top5"]) == (again["top1"], again["top5"])
  assert checkpoint.manager(str(tmp_path)).all_steps() == [2, 3]


@requires_fashion_mnist
def test_a_preemption_during_full_mode_saves_at_that_step_and_the_rerun_finishes(pretrained, tmp_path, monkeypatch):
  c = small_config(pretrained["finished"], mode="full")
  c.train.steps = 3
  c.train.checkpoint_every_steps = 10
  # SIGTERM noticed at the boundary after step 1 (not a log or checkpoint step).
  monkeypatch.setattr(preemption.PreemptionWatch, "reached", lambda self, step: step == 1)
  with pytest.raises(preemption.Preempted, match="checkpoint saved at step 1"):
    linear.run(c, str(tmp_path))
  assert checkpoint.manager(str(tmp_path)).all_steps() == [1]
  monkeypatch.undo()
  result = linear.run(c, str(tmp_path))
  assert (result["steps"], result["trained_steps"], result["finished"]) == (3, 2, True)


def test_main_dispatches_linear_eval_configs(tmp_path):
  # Pretraining's schema would reject the 'task' key; reaching the input check proves the dispatch.
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "simdis_jax.main",
      "--config",
      "configs/imagenet/linear_eval.py",
      "--workdir",
      str(tmp_path / "linear"),
      f"--config.pretrained.workdir={tmp_path / 'pretrained'}",
      f"--config.data.data_dir={tmp_path / 'tfds'}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
  )
  assert proc.returncode != 0
  assert "DatasetNotFoundError" in proc.stderr and "tfds build imagenet2012" in proc.stderr, proc.stderr[-2000:]
