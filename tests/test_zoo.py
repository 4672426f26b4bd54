"""The model zoo: shipped runs opened by name, their records, sha256 checks, and the package data that ships them."""

import ast
import json
import os
import shutil

import numpy as np
import pytest

import simdis_jax
from conftest import requires_fashion_mnist
from simdis_jax import runs, zoo
from simdis_jax.data import fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEACHER = "fmnist/byol-r10w16"
TEACHER_RUN = os.path.join(ROOT, "results", "fashion_mnist_long", "runs", "byol_teacher_e20", "seed0")


def test_the_manifest_holds_the_committed_records_and_every_file_passes_its_check():
  entry = zoo.manifest()[TEACHER]
  with open(os.path.join(TEACHER_RUN, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  with open(os.path.join(TEACHER_RUN, "linear_student", "linear_eval.json"), encoding="utf-8") as f:
    linear = json.load(f)
  assert (
    (entry["knn_top1"], entry["linear_top1"], entry["step"])
    == (summary["knn_top1/student"], linear["top1"], summary["steps"])
    == (88.25, linear["top1"], 9360)
  )
  assert entry["params"] == 307248  # ResNet-10 w16, CIFAR stem, one grey channel: the encoder alone
  for rel, digest in entry["files"].items():  # the shipped checkpoint is the committed run's, byte for byte
    if rel.startswith("checkpoint_checksums/"):
      continue  # written by zoo.build from the checkpoint (test_every_shipped_step_has_its_checksums...)
    source = os.path.join(TEACHER_RUN, rel)
    assert zoo.sha256(source) == digest and os.path.getsize(source) == entry["bytes"][rel]
  assert zoo.verify(TEACHER) == zoo.entry_dir(TEACHER)
  lines = zoo.table().splitlines()
  assert lines[0].split()[:3] == ["name", "method", "network"]
  assert any(l.startswith(TEACHER) and "88.25" in l and "5.9 MiB" in l for l in lines)


def test_names_resolve_and_everything_else_is_left_alone(tmp_path):
  assert zoo.resolve(TEACHER) == zoo.entry_dir(TEACHER)
  for other in ("workdirs/demo", str(tmp_path), "gs://bucket/run", "fmnist/no-such-model", ""):
    assert zoo.resolve(other) == other
  (tmp_path / "fmnist" / "byol-r10w16").mkdir(parents=True)  # a local directory of the same name wins
  cwd = os.getcwd()
  os.chdir(tmp_path)
  try:
    assert zoo.resolve(TEACHER) == TEACHER
  finally:
    os.chdir(cwd)


def test_a_damaged_or_missing_file_is_one_clear_error(tmp_path, monkeypatch):
  shutil.copytree(zoo.MODELS_DIR, str(tmp_path / "models"))
  monkeypatch.setattr(zoo, "MODELS_DIR", str(tmp_path / "models"))
  monkeypatch.setattr(zoo, "_VERIFIED", set())
  rel = sorted(zoo.manifest()[TEACHER]["files"])[-1]
  path = os.path.join(zoo.entry_dir(TEACHER), *rel.split("/"))
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 1
  open(path, "wb").write(bytes(data))
  with pytest.raises(ValueError, match=f"^Zoo model '{TEACHER}': {rel} fails its sha256 check .*reinstall"):
    runs.check_finished(TEACHER, "config.teacher.workdir")
  os.remove(path)
  with pytest.raises(FileNotFoundError, match=f"{rel} is missing"):
    zoo.resolve(TEACHER)


def test_setup_ships_every_file_of_the_manifest():
  source = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
  tree = ast.parse(source)
  fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "zoo_files")
  scope = {"os": os}
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    exec(compile(ast.Module([fn], []), "setup.py", "exec"), scope)  # pylint: disable=exec-used
    shipped = set(scope["zoo_files"]())
  finally:
    os.chdir(cwd)
  assert "manifest.json" in shipped and "package_data={\"simdis_jax.zoo\": zoo_files()}" in source
  for name, entry in zoo.manifest().items():
    assert {f"models/{name}/{rel}" for rel in entry["files"]} <= shipped


@requires_fashion_mnist
def test_load_encoder_by_name_embeds_as_the_committed_run_does():
  images = fashion_mnist.load()["test_images"][:32]
  by_name = simdis_jax.load_encoder(TEACHER)
  by_path = simdis_jax.load_encoder(TEACHER_RUN)
  assert by_name.step == by_path.step == 9360
  got = by_name.embed(images)
  assert got.shape == (32, 128) and np.all(np.isfinite(got))
  np.testing.assert_array_equal(got, by_path.embed(images))


def test_a_zoo_name_is_an_offline_teacher_for_simdis_off_and_seed_with_its_network():
  from simdis_jax import configuration, offline_teacher, train  # pylint: disable=import-outside-toplevel

  for method in ("simdis_off", "seed"):
    c = configuration.base_config()  # model.teacher: the base config's ResNet-50, not the zoo network
    c.method, c.teacher.workdir = method, TEACHER
    c.model.student = configuration.network_config(10, 8, True, 512, 64)
    c.data.name, c.data.image_size, c.data.augment = "fashion_mnist", 28, configuration.fashion_mnist_augment()
    c.probe.num_classes = 10
    if method == "seed":
      # A SEED config is consistent with its own model.teacher (256-d); the zoo teacher's 128 replaces both.
      c.model.student.projector, c.model.student.proj_dim, c.model.sync_bn = "moco", 256, False
    adopted = offline_teacher.adopt(configuration.validate(c))
    t = adopted.model.teacher
    assert (t.depth, t.width, t.cifar_stem, t.proj_dim, t.in_channels, list(t.input_mean)) == (10, 16, True, 128, 0, [])
    assert adopted.model.student.proj_dim == 128  # the student regresses the teacher's 128-d projections
    assert train.check_offline_teacher(adopted).model.student.width == 16


def test_every_shipped_step_has_its_checksums_so_loads_are_verified():
  from simdis_jax import checkpoint  # pylint: disable=import-outside-toplevel

  for name in zoo.names():
    entry = zoo.manifest()[name]
    mgr = checkpoint.manager(zoo.entry_dir(name))
    assert checkpoint.has_checksums(mgr, entry["step"]), name  # else every load warns "UNVERIFIED"
    assert f"checkpoint_checksums/{entry['step']}.json" in entry["files"]


def test_standalone_knn_takes_a_zoo_name_with_a_step(tmp_path, monkeypatch, capsys):
  from simdis_jax.evaluation import knn  # pylint: disable=import-outside-toplevel

  monkeypatch.chdir(tmp_path)  # a zoo name is not a folder here, and none is created for it
  step = zoo.manifest()[TEACHER]["step"]
  assert knn.main(["--workdir", TEACHER, "--step", "7"]) == 2
  assert capsys.readouterr().err.strip() == f"knn: {TEACHER} has no checkpoint at step 7; its steps are [{step}]."
  calls = []
  monkeypatch.setattr(knn, "evaluate_checkpoint", lambda *a: calls.append(a) or {"step": step, "knn_top1/k20": 1.0})
  assert knn.main(["--workdir", TEACHER, "--step", str(step)]) == 0
  assert calls[0][0] == TEACHER and calls[0][5] == step
  record = json.loads(capsys.readouterr().out)
  assert record["settings"] == {"k": [20], "temperature": 0.07, "train_examples": 0, "eval_examples": 0}
  assert os.listdir(tmp_path) == []


# The study-recipe students beside the teacher: distilled from it (SimDis-Off-7v) and alone (BYOL), 5 epochs each.
STUDENT_PARAMS = 77208
STUDENTS = {"fmnist/simdis-off-7v-r10w8": "simdis_off", "fmnist/byol-r10w8": "byol"}


def test_the_students_entries_are_their_archived_runs():
  for name, method in STUDENTS.items():
    entry = zoo.manifest()[name]
    record = os.path.join(ROOT, "results", "zoo", *name.split("/"))
    with open(os.path.join(record, "summary.json"), encoding="utf-8") as f:
      summary = json.load(f)
    with open(os.path.join(record, "linear_student", "linear_eval.json"), encoding="utf-8") as f:
      linear = json.load(f)
    assert (entry["method"], entry["knn_top1"], entry["linear_top1"], entry["step"]) == (
      method,
      summary["knn_top1/student"],
      linear["top1"],
      2340,
    )
    assert entry["params"] == STUDENT_PARAMS  # ResNet-10 w8, CIFAR stem, one grey channel: the encoder alone
    assert entry["source"] == os.path.relpath(record, ROOT)
    for rel in ("config.json", "run_info.json", "summary.json"):  # the shipped records are the archived ones
      assert zoo.sha256(os.path.join(record, rel)) == entry["files"][rel], (name, rel)
    assert zoo.verify(name) == zoo.entry_dir(name)
  lines = zoo.table().splitlines()
  assert sorted(l.split()[0] for l in lines[2:] if l.startswith("fmnist/")) == sorted([TEACHER, *STUDENTS])


@requires_fashion_mnist
def test_the_students_load_by_name_and_embed():
  images = fashion_mnist.load()["test_images"][:32]
  for name in STUDENTS:
    encoder = simdis_jax.load_encoder(name)
    got = encoder.embed(images)
    assert encoder.step == 2340 and got.shape == (32, encoder.num_features) == (32, 64), name
    assert np.all(np.isfinite(got))
