"""--format deepmind: DeepMind's BYOL pickles import and compute what Haiku computes; model.<net>.style="haiku".

The checkpoint is written by the test as deepmind-research/byol's checkpointing writes it (dill,
protocol 2: {'experiment_state': _ByolExperimentState(...), 'step', 'rng'}, Haiku FlatMappings of
NumPy arrays), for a network built with dm-haiku's own modules under BYOL's names; the imported
network's eval-mode outputs are compared with Haiku's forward of the same weights.
"""

import pickle
import types
from collections import namedtuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simdis_jax
import haiku_byol  # pylint: disable=import-error  (tests/haiku_byol.py)
from conftest import tiny_config
from simdis_jax import configuration, import_weights, runs, train
from simdis_jax.interop import deepmind
from simdis_jax.models import resnet
from simdis_jax.models.network import Network

# float32: the reference runs jitted (XLA fuses and reorders sums), the import op by op; the same
# weights with PyTorch padding are off by 10-60 on these features (up to ~100 at ResNet-50).
ATOL = RTOL = 1e-4


# ----------------------------------------------------------------------------- style="haiku" itself


def test_same_pads_are_lax_same_and_agree_with_pytorch_exactly_at_stride_1_and_odd_sizes():
  for n in range(1, 40):
    for k, s in ((1, 1), (1, 2), (3, 1), (3, 2), (7, 2)):
      want = tuple(jax.lax.padtype_to_pads((n, n), (k, k), (s, s), "SAME"))
      assert resnet.same_pads((n, n), (k, k), (s, s)) == want
    assert resnet.same_pads((n,), (3,), (1,)) == ((1, 1),)  # stride 1: PyTorch's padding
    assert resnet.same_pads((n,), (3,), (2,)) == (((1, 1),) if n % 2 else ((0, 1),))
    assert resnet.same_pads((n,), (7,), (2,)) == (((3, 3),) if n % 2 else ((2, 3),))


def _features(net, variables, x):
  return np.asarray(jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, x))


def test_haiku_style_differs_from_torchvision_exactly_where_same_padding_is_asymmetric():
  torchvision, haiku = (resnet.resnet(50, width=2, style=s) for s in ("torchvision", "haiku"))
  variables = torchvision.init(jax.random.PRNGKey(0), jnp.zeros((1, 33, 33, 3)), train=False)
  fresh = haiku.init(jax.random.PRNGKey(0), jnp.zeros((1, 33, 33, 3)), train=False)
  assert jax.tree.structure(variables["params"]) == jax.tree.structure(fresh["params"])
  # Haiku's BNs keep their raw averages and a counter beside mean/var (eval mode reads mean/var, as torchvision's).
  variables = {"params": variables["params"], "batch_stats": fresh["batch_stats"]}
  rng = np.random.default_rng(0)
  # 33 px: every stride-2 map is odd (33, 17, 9, 5, 3), so SAME pads symmetrically: identical results.
  x = rng.normal(size=(2, 33, 33, 3)).astype(np.float32)
  np.testing.assert_array_equal(_features(haiku, variables, x), _features(torchvision, variables, x))
  # 32 px: the stem pads (2, 3), the max-pool and strided 3x3s (0, 1): different features.
  x = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
  got = _features(haiku, variables, x)
  assert np.abs(got - _features(torchvision, variables, x)).max() > 1e-3
  # The matmul convolution and slice max-pool pad as lax does.
  matmul = resnet.resnet(50, width=2, style="haiku", conv_impl="matmul")
  np.testing.assert_allclose(_features(matmul, variables, x), got, atol=1e-5, rtol=1e-5)


def test_haiku_style_basic_blocks_project_the_first_shortcut_of_every_stage():
  x = jnp.zeros((1, 32, 32, 3))
  paths = {}
  for style in resnet.STYLES:
    params = resnet.resnet(18, width=4, style=style).init(jax.random.PRNGKey(0), x)["params"]
    paths[style] = {"/".join(p.key for p in path) for path, _ in jax.tree_util.tree_leaves_with_path(params)}
  assert paths["haiku"] - paths["torchvision"] == {
    "stage1_block1/proj_conv/kernel",
    "stage1_block1/proj_bn/scale",
    "stage1_block1/proj_bn/bias",
  }
  assert paths["torchvision"] <= paths["haiku"]


def test_style_is_a_validated_network_key_and_old_configs_read_as_torchvision():
  c = tiny_config("byol", "byol")
  assert c.model.student.style == "torchvision"
  assert runs.with_network_defaults({"model": {"student": {"depth": 18}}})["model"]["student"]["style"] == "torchvision"
  c.model.student.style = "haiku"
  configuration.validate(c)
  for arch, style in (("resnet", "tf"), ("mobilenet_v3_small", "haiku")):
    c.model.student.arch, c.model.student.style = arch, style
    with pytest.raises(ValueError, match="style"):
      configuration.validate(c)


# ------------------------------------------------ a BYOL network built with dm-haiku, pickled as DeepMind did


def haiku_byol_forward(depth, width, hidden, proj, classes=5):
  """hk.transform_with_state of BYOL's network: ResNet v1 torso (all four stages project), projector, predictor."""
  hk = pytest.importorskip("haiku")
  Torso, MLP = haiku_byol.modules()

  def forward(x, is_training):
    feature = Torso(depth, width, name=f"res_net{depth}")(x, is_training)
    projection = MLP(hidden, proj, name="projector")(feature, is_training)
    return {
      "feature": feature,
      "projection": projection,
      "prediction": MLP(hidden, proj, name="predictor")(projection, is_training),
      "logits": hk.Linear(classes, name="classifier")(feature),
    }

  return hk.transform_with_state(forward)


def trained_like(net, seed, x):
  """Params with non-trivial BN scales/offsets and biases, and BN EMAs accumulated over 3 training steps."""
  params, state = net.init(jax.random.PRNGKey(seed), x, True)
  keys = iter(jax.random.split(jax.random.PRNGKey(seed + 100), 1000))
  noisy = {
    "scale": lambda v: 1 + 0.2 * jax.random.normal(next(keys), v.shape),
    "offset": lambda v: 0.1 * jax.random.normal(next(keys), v.shape),
    "b": lambda v: 0.1 * jax.random.normal(next(keys), v.shape),
  }
  params = {m: {k: noisy.get(k, lambda v: v)(v) for k, v in d.items()} for m, d in params.items()}
  train_step = jax.jit(lambda p, s, b: net.apply(p, s, None, b, True)[1])
  for step in range(3):  # counter 3: `average` = hidden / (1 - 0.9^3), so reading `hidden` would be wrong
    state = train_step(params, state, jax.random.normal(jax.random.PRNGKey(seed + step), x.shape) * 2 + 0.5)
  return jax.device_get(params), jax.device_get(state)


class FlatMapping(dict):
  """Stands for haiku._src.data_structures.FlatMapping (2020), which pickles as (FlatMapping, (a dict,))."""

  pickle_as = ("haiku._src.data_structures", "FlatMapping")

  def __reduce__(self):
    return FlatMapping, (dict(self),)


def _create_namedtuple(name, fields, module):
  del name, fields, module  # never called: only its name is written


_create_namedtuple.pickle_as = ("dill._dill", "_create_namedtuple")
ByolState = namedtuple("_ByolExperimentState", deepmind.STATE_FIELDS)
LarsState = namedtuple("LarsState", ("momentum",))
LarsState.pickle_as = ("byol.utils.optimizers", "LarsState")


class DillLikePickler(pickle._Pickler):  # pylint: disable=protected-access
  """Protocol 2 with the global names a 2020 dill dump holds: numpy.core.*, haiku's FlatMapping, and dill's
  namedtuple factory for _ByolExperimentState (by_reference: the class by its module name instead)."""

  def __init__(self, f, by_reference):
    super().__init__(f, protocol=2)
    self.by_reference = by_reference

  def reducer_override(self, obj):
    if obj is ByolState and not self.by_reference:  # dill's save_type for namedtuple classes
      return _create_namedtuple, (obj.__name__, obj._fields, "byol.byol_experiment")
    return NotImplemented

  def save_global(self, obj, name=None):
    module, name = getattr(obj, "pickle_as", (getattr(obj, "__module__", ""), name or obj.__qualname__))
    if obj is ByolState:
      module, name = "byol.byol_experiment", "_ByolExperimentState"
    if module.startswith("numpy._core"):
      module = "numpy.core" + module[len("numpy._core") :]
    if module in (
      "byol.byol_experiment",
      "byol.utils.optimizers",
      "haiku._src.data_structures",
      "dill._dill",
    ) or module.startswith("numpy.core"):
      self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
      self.memoize(obj)
      return
    super().save_global(obj, name)

  # The base class dispatches functions to its own save_global; route them through the one above.
  dispatch = {**pickle._Pickler.dispatch, types.FunctionType: save_global}  # pylint: disable=protected-access


def write_deepmind_pickle(path, online, target, by_reference=False):
  """{'experiment_state', 'step', 'rng'} as byol/utils/checkpointing.py dumps it (one device's copy)."""

  def frozen(tree):
    return FlatMapping({m: FlatMapping({k: np.asarray(v) for k, v in d.items()}) for m, d in tree.items()})

  state = ByolState(
    frozen(online[0]),
    frozen(target[0]),
    frozen(online[1]),
    frozen(target[1]),
    LarsState(frozen(jax.tree.map(np.zeros_like, online[0]))),
  )
  with open(path, "wb") as f:
    DillLikePickler(f, by_reference).dump(
      {"experiment_state": state, "step": 1000, "rng": np.array([0, 42], np.uint32)}
    )


def rgb_config():
  """The imported runs' settings: the tests' tiny config on 3-channel 32-px images (no data is read)."""
  c = tiny_config("byol", "byol")
  c.data.name, c.data.image_size = "imagenet2012", 32
  c.knn.networks = ()
  return c


@pytest.mark.parametrize("depth,width,by_reference", [(18, 4, False), (50, 2, True)])
def test_deepmind_checkpoint_imports_and_matches_haikus_forward(tmp_path, depth, width, by_reference):
  net = haiku_byol_forward(depth, width, hidden=24, proj=8)
  x = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32)  # even sizes: asymmetric SAME
  online, target = trained_like(net, 0, x), trained_like(net, 1, x)
  path = str(tmp_path / "pretrain.pkl")
  write_deepmind_pickle(path, online, target, by_reference)
  out = str(tmp_path / "run")
  info = import_weights.import_checkpoint("deepmind", path, out, rgb_config())
  assert info["freshly_initialised"] == [] and info["ema"] == "from the file" and info["bn_running_var"] == "biased"
  enc = simdis_jax.load_encoder(out)
  assert dict(enc.config.model.student) == dict(
    configuration.network_config(depth, width, False, 24, 8, style="haiku", head_bias=False)
  )
  assert enc.config.model.bn_running_var == "biased"
  evaluate = jax.jit(lambda p, s: net.apply(p, s, None, x, False)[0])
  for weights, (params, state) in (("online", online), ("ema", target)):
    want = evaluate(params, state)
    # The EMA's projection covers its encoder; the online network's features are checked on their own.
    for project, key in ((False, "feature"), (True, "projection"))[weights == "ema" :]:
      enc = simdis_jax.load_encoder(out, weights=weights, project=project)
      np.testing.assert_allclose(np.asarray(enc.apply_fn(enc.variables, x)), want[key], atol=ATOL, rtol=RTOL)
  # The online predictor becomes the student's BYOL head (sema_dv).
  from simdis_jax import parallel  # pylint: disable=import-outside-toplevel

  restored = runs.restore(out, parallel.make_mesh(jax.devices()[:1])).state.student
  online_net = Network(depth, width, False, 24, 8, heads=("sema_dv",), style="haiku", head_bias=False)
  outs = online_net.apply({"params": restored.params, "batch_stats": restored.batch_stats}, x, train=False)
  want = evaluate(*online)["prediction"]
  np.testing.assert_allclose(np.asarray(outs["predictions"]["sema_dv"]), want, atol=ATOL, rtol=RTOL)
  # An offline teacher for SimDis-Off when model.teacher says style="haiku"; one clear line otherwise.
  c = rgb_config()
  c.method, c.teacher.workdir = "simdis_off", out
  c.model.teacher = configuration.network_config(depth, width, False, 24, 8, style="haiku", head_bias=False)
  assert train.check_offline_teacher(c).model.student.style == "haiku"
  c.model.teacher.style = "torchvision"
  with pytest.raises(ValueError, match="style: run has 'haiku', config wants 'torchvision'"):
    train.check_offline_teacher(c)
  # BN statistics are Haiku's zero-debiased `average` (mean/var) and raw `hidden` beside its counter, unchanged.
  stem, ema = restored.batch_stats["encoder"]["stem_bn"], online[1][f"res_net{depth}/~/initial_batchnorm/~/var_ema"]
  np.testing.assert_array_equal(np.asarray(stem["var"]), ema["average"].reshape(-1))
  np.testing.assert_array_equal(np.asarray(stem["var_hidden"]), ema["hidden"].reshape(-1))
  assert float(stem["counter"]) == int(ema["counter"]) == 3
  assert "bias" not in restored.params["projector"]["dense2"]  # BYOL's last Linear has none (head_bias=False)
  # And back: to_haiku gives the file's online params and state under Haiku's names (predictor included).
  params, state = deepmind.to_haiku({"params": restored.params, "batch_stats": restored.batch_stats}, f"res_net{depth}")
  want_params = {k: v for k, v in online[0].items() if not k.startswith("classifier")}
  assert jax.tree.structure(params) == jax.tree.structure(want_params)
  for got, want in zip(jax.tree.leaves((params, state)), jax.tree.leaves((want_params, online[1]))):
    np.testing.assert_array_equal(np.asarray(got), want)


def test_deepmind_reader_imports_nothing_and_rejects_other_pickles(tmp_path, capsys):
  class Evil:
    def __reduce__(self):
      return (print, ("side effect",))

  path = str(tmp_path / "evil.pkl")
  with open(path, "wb") as f:
    pickle.dump({"experiment_state": Evil()}, f, protocol=2)
  loaded = deepmind.load(path)
  assert isinstance(loaded["experiment_state"], deepmind.Record)
  assert loaded["experiment_state"].args == ("side effect",)  # print was never called: the record holds it
  with pytest.raises(ValueError, match="no BYOL experiment state"):
    import_weights.import_checkpoint("deepmind", path, str(tmp_path / "run"), rgb_config())
  with open(path, "wb") as f:
    f.write(b"not a pickle")
  with pytest.raises(ValueError, match="not a readable pickle"):
    deepmind.load(path)
  assert import_weights.main(["--format", "deepmind", "--in", path, "--out", str(tmp_path / "run")]) == 2
  assert capsys.readouterr().err.count("\n") == 1  # one line, no traceback
