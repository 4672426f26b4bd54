"""Config validation and the shipped presets."""

import glob
import importlib.util
import os

import ml_collections
import pytest

from conftest import tiny_config
from simdis_jax import configuration, runs
from simdis_jax.evaluation import linear_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config_file(path, arg=None):
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def test_unknown_view_is_a_clear_error():
  c = tiny_config()
  c.views = ("sema_dv", "teacher_proj")
  with pytest.raises(ValueError, match=r"Unknown target view.*teacher_proj.*tema_dv"):
    configuration.validate(c)


def test_offline_without_teacher_workdir_is_a_clear_error_when_training():
  c = tiny_config("simdis_off")
  configuration.validate(c)  # a research step or an evaluation of the config never reads the teacher run
  from simdis_jax import train  # pylint: disable=import-outside-toplevel

  with pytest.raises(ValueError, match=r"needs a finished teacher run: set --config.teacher.workdir=.*method=byol"):
    train.check_offline_teacher(c)


def test_bad_method_is_a_clear_error():
  c = tiny_config()
  c.method = "simdis_offline"
  with pytest.raises(ValueError, match=r"config.method='simdis_offline'.*byol.*simdis_off.*simdis_on"):
    configuration.validate(c)


def test_byol_with_teacher_views_is_a_clear_error():
  c = tiny_config("byol", "simdis_2v")
  with pytest.raises(ValueError, match="trains the student alone"):
    configuration.validate(c)


def test_unknown_key_and_wrong_types_are_clear_errors():
  c = tiny_config()
  c.unlock()
  c.train.batchsize = 3
  with pytest.raises(ValueError, match=r"Unknown config key 'train.batchsize'.*batch_size"):
    configuration.validate(c)
  raw = tiny_config().to_dict()
  raw["model"]["sync_bn"] = "yes"  # a config file built from plain dicts has no type locking
  c = ml_collections.ConfigDict(raw)
  with pytest.raises(ValueError, match="model.sync_bn must be True or False"):
    configuration.validate(c)
  c = tiny_config()
  c.train.batch_size = 0
  with pytest.raises(ValueError, match="batch_size.*positive integer"):
    configuration.validate(c)
  c = tiny_config()
  c.optim.lars_form = "lamb"
  with pytest.raises(ValueError, match="optim.lars_form"):
    configuration.validate(c)


CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_shipped_config_validates_and_documents_its_command(path):
  c = load_config_file(path)
  if "runs" in c:  # a study (simdis_jax.study): its presets are tested in tests/test_study.py
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "python -m simdis_jax.study --config configs/" in module.__doc__
    return
  if c.get("task") == "linear_eval":
    c = linear_config.validate(c)
    assert c.protocol in linear_config.PROTOCOLS
  else:
    c = configuration.validate(c)
    assert c.views
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert "python -m simdis_jax.main --config configs/" in module.__doc__


def test_paper_presets_carry_the_papers_hyperparameters():
  on7 = load_config_file(os.path.join(ROOT, "configs/imagenet/simdis_on_7v.py"))
  assert (on7.method, len(on7.views), on7.optim.name, on7.model.sync_bn) == ("simdis_on", 7, "lars", True)
  assert (on7.train.batch_size, on7.optim.base_lr, on7.optim.warmup_epochs) == (2048, 0.3, 10.0)
  assert (on7.model.student.depth, on7.model.teacher.depth, on7.ema.base) == (18, 50, 0.99)
  off = load_config_file(os.path.join(ROOT, "configs/imagenet/simdis_off.py"))
  assert off.method == "simdis_off" and tuple(off.views) == ("sema_dv", "tema_dv")
  t2 = os.path.join(ROOT, "configs/imagenet/table2.py")
  for row in ("byol", "t_sv", "t_dv", "tema_sv", "tema_dv", "t_sv_t_dv", "tema_sv_tema_dv", "all_teacher", "7v"):
    for scheme in ("online", "offline"):
      c = configuration.validate(load_config_file(t2, f"{row},{scheme}"))
      assert (c.optim.name, c.optim.base_lr, c.model.sync_bn, c.train.batch_size) == ("sgd", 0.05, False, 1024)
  assert len(load_config_file(t2, "all_teacher,online").views) == 5
  with pytest.raises(ValueError, match="row"):
    load_config_file(t2, "8v,online")


def test_imagenette_preset_is_deepminds_published_byol_setting():
  c = configuration.validate(load_config_file(os.path.join(ROOT, "configs/imagenette/byol_r18.py")))
  assert (c.method, c.model.student.depth, c.model.student.cifar_stem, c.data.image_size) == ("byol", 18, False, 128)
  assert (c.train.batch_size, c.train.epochs, c.data.name) == (256, 1000.0, "imagenette/320px-v2")
  assert (c.optim.lars_form, c.ema.timing, c.final_eval.linear_protocol) == ("deepmind", "after", "deepmind")
  assert c.optim.warmup_init_lr == 0.0  # DeepMind's warm-up starts at 0


def test_deepmind_recipe_presets_take_deepminds_steps_network_and_classifier():
  for path, images, batch, classes in (
    ("configs/imagenet/byol_r50_deepmind.py", 1_281_167, 4096, 1000),
    ("configs/imagenette/byol_r50_deepmind.py", 9_469, 256, 10),
  ):
    c = configuration.validate(load_config_file(os.path.join(ROOT, path)))
    s = c.model.student
    assert (s.depth, s.width, s.style, s.head_bias, s.hidden_dim, s.proj_dim) == (50, 64, "haiku", False, 4096, 256)
    assert (c.optim.lars_form, c.optim.base_lr, c.optim.weight_decay, c.optim.weight_decay_mask) == (
      "deepmind",
      0.2,
      1.5e-6,
      "kernels",
    )
    assert (c.optim.warmup_init_lr, c.ema.base, c.ema.timing, c.model.ema_init) == (0.0, 0.996, "after", "separate")
    assert (c.probe.enabled, c.probe.optimizer, c.probe.num_classes) == (True, "main", classes)
    # DeepMind's step counts: images // batch over all epochs (configs/byol.py:36, :64).
    lengths = runs.schedule_lengths(c.train, images, c.optim.warmup_epochs)
    assert (lengths["total_steps"], lengths["warmup_steps"]) == (1000 * images // batch, 10 * images // batch)


def test_supervised_needs_labels_and_ignores_the_target_views():
  c = tiny_config("supervised", "simdis_7v")  # views are not used by the supervised student
  assert configuration.validate(c).method == "supervised"
  c.data.name, c.data.folder = "folder", "/data/frames/*.jpg"
  c.knn.networks, c.probe.enabled = (), False
  with pytest.raises(ValueError, match="method 'supervised' trains on labels.*has none"):
    configuration.validate(c)


@pytest.mark.parametrize(
  "schema, key, value, message",
  [
    ("pretrain", "data.prefetch", -1, r"config.data.prefetch=-1 must be an integer >= 0\."),
    ("pretrain", "knn.temperature", 0.0, r"config.knn.temperature=0.0 is out of range: it must be > 0.0\."),
    ("pretrain", "knn.networks", ("student", "x"), r"config.knn.networks=.* has \['x'\]; use any of"),
    ("pretrain", "data.image_size", 0, r"config.data.image_size=0 must be a positive integer\."),
    ("linear", "pretrained.step", -2, r"config.pretrained.step=-2 is out of range: it must be a whole number >= -1"),
    ("linear", "optim.momentum", 1.0, r"config.optim.momentum=1.0 is out of range: it must be >= 0.0 and < 1.0"),
    ("linear", "data.image_size", 0, r"config.data.image_size=0 must be a positive integer\."),
  ],
)
def test_one_table_walker_checks_both_schemas(schema, key, value, message):
  c = tiny_config() if schema == "pretrain" else linear_config.base_config()
  section, _, name = key.rpartition(".")
  target = c
  for part in section.split("."):
    target = target[part]
  with target.ignore_type():
    target[name] = value
  with pytest.raises(ValueError, match=message):
    (configuration.validate if schema == "pretrain" else linear_config.validate)(c)


def test_a_table_row_passes_good_values_and_skips_absent_keys():
  rules = (
    configuration.whole_number("a.n"),
    configuration.number("a.x", above=0.0, below=1.0),
    configuration.one_of("a.s", ("p", "q")),
    configuration.whole_number("a.absent"),
  )
  good = ml_collections.ConfigDict({"a": {"n": 3, "x": 0.5, "s": "q"}})
  configuration.check_rules(good, rules)
  for bad, message in (
    ({"n": 2.5}, r"a.n=2.5 must be a positive integer"),
    ({"x": 1.0}, r"a.x=1.0 .*< 1.0"),
    ({"s": "r"}, r"a.s='r' is not valid; choose one of \['p', 'q'\]"),
  ):
    c = ml_collections.ConfigDict({"a": {"n": 3, "x": 0.5, "s": "q", **bad}})
    with pytest.raises(ValueError, match=message):
      configuration.check_rules(c, rules)
