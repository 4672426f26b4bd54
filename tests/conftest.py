"""Eight fake CPU devices for every test (SyncBN / sharding tests need them)."""

import os


def xla_flags(devices: int) -> str:
  """XLA_FLAGS of the tests' processes: `devices` fake CPU devices, programs compiled at optimisation level 0.

  The tests run tiny programs, so XLA:CPU's optimising compile is most of their time; at
  level 0 a tiny train step compiles in about half the CPU time (the 8-step CLI run takes
  57 instead of 82 CPU-s). Sums may round differently from level 2 in the last float32 bits,
  so tolerances compare like with like: every test process (and the processes they start)
  uses these flags. Training outside the tests compiles at XLA's default level.
  """
  return f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"


os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402  pylint: disable=wrong-import-position
import pytest  # noqa: E402  pylint: disable=wrong-import-position

from simdis_jax import configuration  # noqa: E402  pylint: disable=wrong-import-position
from simdis_jax.data import augment, fashion_mnist  # noqa: E402  pylint: disable=wrong-import-position

jax.config.update("jax_platforms", "cpu")
# Many tests compile the same tiny train steps: a persistent cache shared by the
# session (and its subprocesses) compiles each one once.
_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/simdis_jax_test_jit_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def tiny_config(method="simdis_on", views="simdis_7v"):
  """A seconds-per-step config on Fashion-MNIST: ResNet-10 layouts of width 4/8, small heads."""
  c = configuration.base_config()
  c.method = method
  c.views = configuration.VIEW_PRESETS[views]
  c.model.student = configuration.network_config(10, 4, True, 32, 16)
  c.model.teacher = configuration.network_config(10, 8, True, 32, 16)
  c.optim.base_lr = 0.5
  c.optim.warmup_epochs = 0.0
  c.train.batch_size = 16
  c.train.steps = 4
  c.train.log_every_steps = 2
  c.train.checkpoint_every_steps = 2
  c.train.knn_every_steps = 0
  c.data.name = "fashion_mnist"
  c.data.image_size = 16
  c.data.augment = augment.default_config(1)
  c.knn.train_examples = 200
  c.knn.eval_examples = 100
  c.knn.batch_size = 64
  return c


requires_fashion_mnist = pytest.mark.skipif(
  not os.path.exists(os.path.join(fashion_mnist.DEBIAN_DIR, fashion_mnist.FILES["train_images"])),
  reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
  """The uninterrupted tiny CLI run that fault and multi-host tests compare against (computed once)."""
  import run_helpers  # pylint: disable=import-outside-toplevel

  return run_helpers.baseline(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """A finished 2-step SimDis-On (2 views) run of tiny_config, trained once for every test that only reads one.

  Student (ResNet-10 width 4) and teacher (width 8) with online and EMA weights, checkpoints at steps 1 and 2.
  """
  from simdis_jax import train  # pylint: disable=import-outside-toplevel

  c = tiny_config("simdis_on", "simdis_2v")
  c.knn.networks = ()
  c.train.steps = 2
  c.train.checkpoint_every_steps = 1
  workdir = str(tmp_path_factory.mktemp("tiny_run") / "run")
  train.train_and_evaluate(c, workdir)
  return workdir


@pytest.fixture(scope="session")
def byol_teacher(tmp_path_factory):
  """The 150-step BYOL run of tests/test_learning.py (trained once), and the offline teacher of SEED and SimDis-Off.

  The learning tests distil from it: a student distilled from a one-step BYOL run (barely trained) does not
  beat the untrained network, so a test of distillation needs a teacher that has learnt something.
  """
  import run_helpers  # pylint: disable=import-outside-toplevel

  return run_helpers.trained_byol(str(tmp_path_factory.mktemp("byol_teacher")))


# A slow test counts as this many quick ones when the groups are ordered for the two workers (below).
SLOW_TEST_WEIGHT = 60


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  """Groups for pytest-xdist's `--dist loadgroup` (pytest.ini), heaviest first.

  One group per file, as `loadfile` would make, except that every test using the session fixture
  `byol_teacher` joins one group, so that one worker trains that 150-step BYOL run once instead of each
  worker training its own (the other tests of those files stay in their file's group). The groups are
  ordered by weight (a slow test counts SLOW_TEST_WEIGHT, another 1) and pytest.ini turns off xdist's own
  order (by test count): the workers take the groups in this order, so the longest runs start first and the
  quick groups fill the end, instead of one worker finishing alone with a long run.
  """
  group_of, weight = {}, {"byol_teacher": SLOW_TEST_WEIGHT}  # the fixture's BYOL run weighs as a slow test
  for item in items:
    group = "byol_teacher" if "byol_teacher" in item.fixturenames else item.nodeid.split("::")[0]
    item.add_marker(pytest.mark.xdist_group(group))
    group_of[item.nodeid] = group
    weight[group] = weight.get(group, 0) + (SLOW_TEST_WEIGHT if item.get_closest_marker("slow") else 1)
  items.sort(key=lambda item: -weight[group_of[item.nodeid]])  # stable: a group's tests keep their order
