"""python -m simdis_jax.import_weights: published checkpoints become finished BYOL runs that compute what the
source did.

PyTorch files are written by torch itself (the CPU wheel; the tests skip without it) and
read back without it; each imported network's eval-mode output on fixed inputs is
compared with torch's own forward of the same weights.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simdis_jax
from conftest import requires_fashion_mnist, tiny_config
from simdis_jax import config_files, configuration, import_weights, optim, runs, train
from simdis_jax.models import batch_norm

torch = pytest.importorskip("torch")
nn = torch.nn
ATOL = 2e-5  # float32: XLA's and torch's convolutions sum in different orders


# ------------------------------------------------------- torchvision-layout networks written by torch


class Block(nn.Module):
  """torchvision's BasicBlock / Bottleneck (v1.5: stride on the 3×3), names as torchvision has them."""

  def __init__(self, cin, planes, stride, bottleneck):
    super().__init__()
    out = planes * (4 if bottleneck else 1)
    if bottleneck:
      self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
      self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
      self.conv3, self.bn3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out)
    else:
      self.conv1, self.bn1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
      self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
    self.bottleneck = bottleneck
    self.downsample = None
    if stride != 1 or cin != out:
      self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.bottleneck:
      y = self.bn3(self.conv3(torch.relu(y)))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(nn.Module):
  """A torchvision-format ResNet of any width; cifar=True: 3×3/1 stem without max-pool (the CIFAR variant)."""

  def __init__(self, layers=(1, 1, 1, 1), width=8, channels=1, cifar=True, bottleneck=False, classes=10):
    super().__init__()
    self.conv1 = nn.Conv2d(channels, width, 3 if cifar else 7, 1 if cifar else 2, 1 if cifar else 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
    cin = width
    for i, n in enumerate(layers):
      blocks = []
      for j in range(n):
        blocks.append(Block(cin, width * 2**i, 2 if i > 0 and j == 0 else 1, bottleneck))
        cin = width * 2**i * (4 if bottleneck else 1)
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    self.fc = nn.Linear(cin, classes)

  def features(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    for i in range(4):
      x = getattr(self, f"layer{i + 1}")(x)
    return x.mean((2, 3))


def randomise_bn(module, seed=0):
  """Non-trivial BN parameters and running statistics, as a trained network has."""
  g = torch.Generator().manual_seed(seed)
  for m in module.modules():
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
      with torch.no_grad():
        m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
  return module.eval()


def fixed_inputs(n=6, size=16, channels=1):
  """Preprocessed (normalised float) inputs: NHWC for JAX and the same values NCHW for torch."""
  x = np.random.default_rng(1).normal(size=(n, size, size, channels)).astype(np.float32)
  return x, torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def tiny_byol_config():
  """The imported runs' dataset and evaluation settings: the tests' tiny Fashion-MNIST config."""
  c = tiny_config("byol", "byol")
  c.knn.networks = ()
  return c


@pytest.mark.parametrize("cifar,bottleneck,layers", [(True, False, (1, 1, 1, 1)), (False, True, (3, 4, 6, 3))])
def test_torchvision_resnet_imports_and_matches_torch(tmp_path, cifar, bottleneck, layers):
  net = randomise_bn(TorchResNet(layers, width=4, cifar=cifar, bottleneck=bottleneck))
  path = str(tmp_path / "resnet.pth")
  torch.save(net.state_dict(), path)
  info = import_weights.import_checkpoint(
    "torchvision", path, str(tmp_path / "run"), tiny_byol_config(), hidden_dim=32, proj_dim=16
  )
  assert info["freshly_initialised"] == ["predictor_sema_dv", "projector"] and info["ema"] == "copy of online"
  assert "classifier fc (10 classes)" in info["notes"][0]
  enc = simdis_jax.load_encoder(str(tmp_path / "run"))
  depth = 50 if bottleneck else 10
  assert dict(enc.config.model.student) == dict(configuration.network_config(depth, 4, cifar, 32, 16))
  assert enc.config.model.bn_running_var == "unbiased"
  x, xt = fixed_inputs()
  got = np.asarray(enc.apply_fn(enc.variables, x))
  with torch.no_grad():
    want = net.features(xt).numpy()
  np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-5)
  # The EMA copy computes the same, and the running variance is PyTorch's value unchanged.
  ema = simdis_jax.load_encoder(str(tmp_path / "run"), weights="ema")
  np.testing.assert_array_equal(np.asarray(ema.apply_fn(ema.variables, x)), got)
  np.testing.assert_array_equal(
    np.asarray(enc.variables["batch_stats"]["encoder"]["stem_bn"]["var"]), net.bn1.running_var.numpy()
  )


# ------------------------------------------------------------------- the SimDis authors' layout


class AuthorsNet(nn.Module):
  """The authors' network layout: a ResNet whose fc is the projector, plus pred_<head> predictors."""

  def __init__(self, heads=(), width=4, hidden=32, proj=16):
    super().__init__()
    self.trunk = TorchResNet(width=width)
    for name in ("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4"):
      setattr(self, name, getattr(self.trunk, name))
    del self.trunk
    feat = width * 8
    self.fc = nn.Sequential(nn.Linear(feat, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, proj))
    for h in heads:
      setattr(
        self,
        f"pred_{h}",
        nn.Sequential(nn.Linear(proj, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, proj)),
      )

  def features(self, x):
    return TorchResNet.features(self, x)


class AuthorsModel(nn.Module):
  """SimDis_Model's parameter layout: student, student_ema (no predictors), teacher, teacher_ema."""

  def __init__(self):
    super().__init__()
    self.student = randomise_bn(AuthorsNet(("sema_dv", "t_dv")), 1)
    self.student_ema = randomise_bn(AuthorsNet(), 2)
    self.teacher = randomise_bn(AuthorsNet(("ttemadv",), width=8), 3)
    self.teacher_ema = randomise_bn(AuthorsNet(width=8), 4)


@pytest.fixture(scope="module")
def authors_file(tmp_path_factory):
  """A checkpoint saved as the authors' run_SimDis.py saves one (DistributedDataParallel's module. prefix)."""
  torch.manual_seed(0)
  model = AuthorsModel().eval()
  path = str(tmp_path_factory.mktemp("authors") / "last_epoch_ckpt.pth.tar")
  wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}
  torch.save({"start_epoch": 300, "model": wrapped, "optimizer": {"state": {}, "param_groups": []}}, path)
  return model, path


@pytest.mark.parametrize("network", ["student", "teacher"])
def test_authors_checkpoint_imports_online_and_ema_with_projector_and_predictor(authors_file, tmp_path, network):
  model, path = authors_file
  out = str(tmp_path / network)
  info = import_weights.import_checkpoint("authors", path, out, tiny_byol_config(), network=network)
  assert info["freshly_initialised"] == [] and info["ema"] == "from the file"
  x, xt = fixed_inputs()
  for weights, net in (("online", getattr(model, network)), ("ema", getattr(model, f"{network}_ema"))):
    with torch.no_grad():
      feat = net.features(xt)
      proj = net.fc(feat).numpy()
    enc = simdis_jax.load_encoder(out, weights=weights)
    np.testing.assert_allclose(np.asarray(enc.apply_fn(enc.variables, x)), feat.numpy(), atol=ATOL, rtol=1e-5)
    enc = simdis_jax.load_encoder(out, weights=weights, project=True)
    np.testing.assert_allclose(np.asarray(enc.apply_fn(enc.variables, x)), proj, atol=ATOL, rtol=1e-5)
  # The online predictor: the BYOL head (pred_sema_dv of a student, pred_ttemadv of a teacher).
  head = getattr(model, network).pred_sema_dv if network == "student" else model.teacher.pred_ttemadv
  config = simdis_jax.load_encoder(out).config
  from simdis_jax.state import build_networks  # pylint: disable=import-outside-toplevel

  with open(os.path.join(out, "run_info.json")) as f:
    assert json.load(f)["total_steps"] == 1
  restored = runs.restore(out, _mesh1()).state.student
  online = build_networks(config).student
  outs = online.apply({"params": restored.params, "batch_stats": restored.batch_stats}, x, train=False)
  with torch.no_grad():
    want = head(getattr(model, network).fc(getattr(model, network).features(xt))).numpy()
  np.testing.assert_allclose(np.asarray(outs["predictions"]["sema_dv"]), want, atol=ATOL, rtol=1e-5)


def _mesh1():
  from simdis_jax import parallel  # pylint: disable=import-outside-toplevel

  return parallel.make_mesh(jax.devices()[:1])


def test_pth_files_are_read_without_torch(authors_file):
  _, path = authors_file
  code = (
    "import sys; sys.modules['torch'] = None\n"
    "from simdis_jax.interop import torch_pickle\n"
    f"obj = torch_pickle.load({path!r})\n"
    "sd = torch_pickle.state_dict(obj)\n"
    "print(obj['start_epoch'], len(sd), sd['module.student.conv1.weight'].shape, 'torch' in sys.modules and "
    "sys.modules['torch'] is not None)"
  )
  out = subprocess.run(
    [sys.executable, "-c", code],
    capture_output=True,
    text=True,
    check=True,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  n = len(authors_file[0].state_dict())
  assert out.stdout.split() == ["300", str(n), "(4,", "1,", "3,", "3)", "False"]


def test_wrong_files_and_formats_are_clear_errors(authors_file, tmp_path):
  _, path = authors_file
  with pytest.raises(ValueError, match="No 'conv1.weight'"):
    import_weights.import_checkpoint("torchvision", path, str(tmp_path / "a"), tiny_byol_config())
  with pytest.raises(ValueError, match="no 'critic.' network"):
    import_weights.import_checkpoint("authors", path, str(tmp_path / "b"), tiny_byol_config(), network="critic")
  (tmp_path / "old.pth").write_bytes(b"\x80\x02}q\x00.")
  with pytest.raises(ValueError, match="not a zip-format PyTorch file"):
    import_weights.import_checkpoint("torchvision", str(tmp_path / "old.pth"), str(tmp_path / "c"))
  rgb = TorchResNet(channels=3)
  torch.save(rgb.state_dict(), str(tmp_path / "rgb.pth"))
  with pytest.raises(ValueError, match="takes 3-channel images but config.data.name='fashion_mnist'"):
    import_weights.import_checkpoint("torchvision", str(tmp_path / "rgb.pth"), str(tmp_path / "d"), tiny_byol_config())


# ------------------------------------------------------------------- BN running variance conventions


@pytest.mark.parametrize("shape", [(2, 2, 2, 5), (8, 5)])
def test_unbiased_running_variance_follows_torch_and_biased_is_flax(shape):
  import flax.linen as fnn  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  xs = [rng.normal(size=shape).astype(np.float32) * 3 + 1 for _ in range(3)]
  tbn = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[-1]).train()
  ours, flax_bn = (
    m(use_running_average=False, momentum=0.9, epsilon=1e-5) for m in (batch_norm.BatchNorm, fnn.BatchNorm)
  )
  v_ours = v_flax = ours.init(jax.random.PRNGKey(0), xs[0])
  for x in xs:
    y, upd = ours.apply(v_ours, x, mutable=["batch_stats"])
    y_flax, upd_flax = flax_bn.apply(v_flax, x, mutable=["batch_stats"])
    v_ours, v_flax = {**v_ours, **upd}, {**v_flax, **upd_flax}
    y_torch = tbn(torch.from_numpy(np.moveaxis(x, -1, 1) if len(shape) == 4 else x))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_flax))  # the output is Flax's, bit for bit
    y_torch = y_torch.detach().numpy()
    np.testing.assert_allclose(np.asarray(y), np.moveaxis(y_torch, 1, -1) if len(shape) == 4 else y_torch, atol=1e-5)
  n = int(np.prod(shape[:-1]))
  np.testing.assert_allclose(np.asarray(v_ours["batch_stats"]["var"]), tbn.running_var.numpy(), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(v_ours["batch_stats"]["mean"]), tbn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
  # Flax's (biased) running variance is torch's with each batch's n / (n - 1) undone: 8 values per channel
  # put the two conventions 1/7 apart in every batch's contribution.
  want_biased = np.ones(shape[-1], np.float32)
  for x in xs:
    want_biased = 0.9 * want_biased + 0.1 * x.reshape(-1, shape[-1]).var(0)
  np.testing.assert_allclose(np.asarray(v_flax["batch_stats"]["var"]), want_biased, rtol=1e-5)
  assert n == 8


def test_default_networks_still_use_flax_batchnorm():
  from simdis_jax.models import resnet  # pylint: disable=import-outside-toplevel
  import flax.linen as fnn  # pylint: disable=import-outside-toplevel

  assert resnet.batch_norm(True, None).func is fnn.BatchNorm
  assert resnet.batch_norm(True, None, running_var="unbiased").func is batch_norm.BatchNorm
  c = tiny_config()
  c.model.bn_running_var = "pytorch"
  from simdis_jax import configuration  # pylint: disable=import-outside-toplevel

  with pytest.raises(ValueError, match="bn_running_var='pytorch'"):
    configuration.validate(c)


def test_the_authors_imagenet_presets_keep_pytorchs_running_variance_and_the_demo_keeps_flaxs():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for name in ("byol_r18", "byol_r50_teacher", "simdis_off", "simdis_on", "simdis_on_7v", "table2"):
    c = config_files.load_config(os.path.join(root, "configs", "imagenet", f"{name}.py"))
    assert c.model.bn_running_var == "unbiased", name
  assert config_files.load_config(os.path.join(root, "configs", "demo.py")).model.bn_running_var == "biased"


# ------------------------------------------------------------------- the authors' LARS at zero norms


def authors_lars_reference(w, g, buf, lr, eta=1e-3, wd=1e-4, momentum=0.9):
  """The SimDis code's LARS step for one kernel (no special case for zero norms), in torch."""
  w, g, buf = (torch.tensor(np.asarray(a)) for a in (w, g, buf))
  local_lr = eta * torch.norm(w) / (torch.norm(g) + wd * torch.norm(w) + 1e-8)
  buf = buf * momentum + (g + wd * w) * (local_lr * lr)
  return (w - buf).numpy(), buf.numpy()


@pytest.mark.parametrize("case", ["zero_grad", "zero_weight", "both_nonzero"])
def test_authors_lars_matches_their_code_at_zero_norms_and_the_fallback_is_its_own_form(case):
  rng = np.random.default_rng(0)
  w = np.zeros((3, 4), np.float32) if case == "zero_weight" else rng.normal(size=(3, 4)).astype(np.float32)
  g = np.zeros((3, 4), np.float32) if case == "zero_grad" else rng.normal(size=(3, 4)).astype(np.float32)
  buf = rng.normal(size=(3, 4)).astype(np.float32)
  tx = optim.authors_lars(lambda _: 0.5, 0.9, 1e-3, 1e-4)
  params, grads = {"kernel": jnp.asarray(w)}, {"kernel": jnp.asarray(g)}
  state = optim.AuthorsLarsState(jnp.zeros([], jnp.int32), {"kernel": jnp.asarray(buf)})
  updates, new_state = tx.update(grads, state, params)
  want_w, want_buf = authors_lars_reference(w, g, buf, 0.5)
  np.testing.assert_allclose(np.asarray(params["kernel"] + updates["kernel"]), want_w, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(new_state.buf["kernel"]), want_buf, rtol=1e-6, atol=1e-7)
  fallback = optim.authors_lars(lambda _: 0.5, 0.9, 1e-3, 1e-4, zero_norm_fallback=True)
  fb_buf = np.asarray(fallback.update(grads, state, params)[1].buf["kernel"])
  if case == "both_nonzero":
    np.testing.assert_array_equal(fb_buf, np.asarray(new_state.buf["kernel"]))
  else:  # the plain rate: buf = m·buf + lr·(g + wd·w)
    np.testing.assert_allclose(fb_buf, 0.9 * buf + 0.5 * (g + 1e-4 * w), rtol=1e-6)
    assert not np.allclose(fb_buf, want_buf)


# ------------------------------------------------------------------- SimDis-Off from an imported teacher


@pytest.fixture(scope="module")
def imported_teacher(tmp_path_factory):
  """The tiny config's teacher (ResNet-10 width 8, CIFAR stem) written by torch and imported by the CLI."""
  root = tmp_path_factory.mktemp("imported")
  teacher = randomise_bn(TorchResNet(width=8, cifar=True))
  torch.save(teacher.state_dict(), str(root / "teacher.pth"))
  assert (
    import_weights.main(
      [
        "--format",
        "torchvision",
        "--in",
        str(root / "teacher.pth"),
        "--out",
        str(root / "teacher"),
        "--config",
        os.path.join(os.path.dirname(__file__), "tiny_cli_config.py") + ":byol,byol",
        "--hidden_dim",
        "32",
        "--proj_dim",
        "16",
      ]
    )
    == 0
  )
  return teacher, str(root / "teacher")


@requires_fashion_mnist
def test_simdis_off_distils_from_an_imported_torchvision_teacher(imported_teacher, tmp_path):
  teacher, workdir = imported_teacher
  c = tiny_config("simdis_off", "simdis_2v")  # the kNN monitor of student and teacher stays on
  c.train.steps = 2
  c.teacher.workdir = workdir
  final = train.train_and_evaluate(c, str(tmp_path / "student"))
  assert np.isfinite(final["loss"]) and 0.0 < final["loss"] < 8.0
  # The frozen teacher of the finished run is the imported network, unchanged by training.
  run = simdis_jax.load_encoder(str(tmp_path / "student"), network="teacher")
  x, xt = fixed_inputs()
  with torch.no_grad():
    want = teacher.features(xt).numpy()
  np.testing.assert_allclose(np.asarray(run.apply_fn(run.variables, x)), want, atol=ATOL, rtol=1e-5)
  assert run.step == 2


@requires_fashion_mnist
def test_knn_and_linear_evaluation_accept_an_imported_run(imported_teacher, tmp_path):
  from simdis_jax.evaluation import knn, linear, linear_config  # pylint: disable=import-outside-toplevel

  _, workdir = imported_teacher
  result = knn.evaluate_checkpoint(workdir, ks=(5,), train_examples=200, eval_examples=100)
  assert result["step"] == 1 and 10.0 < result["knn_top1/k5"] <= 100.0  # above chance on 10 classes
  c = linear_config.apply_protocol(linear_config.base_config(), "authors")
  c.pretrained.workdir = workdir
  c.train.epochs = 1.0
  c.train.batch_size = 32
  c.eval.batch_size = 64
  c.data.train_examples = 128
  c.data.eval_examples = 64
  out = linear.run(c, str(tmp_path / "linear"))
  assert 0.0 <= out["top1"] <= 100.0


# ------------------------------------------------ an imported teacher's network and inputs travel with it


@pytest.fixture(scope="module")
def colour_teacher(tmp_path_factory):
  """A 3-channel torchvision ResNet-10 (ImageNet stem), imported by one command with the default (ImageNet) inputs."""
  root = tmp_path_factory.mktemp("colour")
  teacher = randomise_bn(TorchResNet(width=8, channels=3, cifar=False), seed=1)
  torch.save(teacher.state_dict(), str(root / "teacher.pth"))
  assert (
    import_weights.main(
      [
        "--format",
        "torchvision",
        "--in",
        str(root / "teacher.pth"),
        "--out",
        str(root / "teacher"),
        "--hidden_dim",
        "32",
        "--proj_dim",
        "16",
      ]
    )
    == 0
  )
  return teacher, str(root / "teacher")


@requires_fashion_mnist
def test_a_colour_imagenet_teacher_distils_into_a_grey_student_with_one_flag(colour_teacher, tmp_path):
  teacher, workdir = colour_teacher
  c = tiny_config("simdis_off", "simdis_2v")  # its model.teacher (CIFAR stem, 1 channel) is not the import's
  c.train.steps = 2
  c.teacher.workdir = workdir
  final = train.train_and_evaluate(c, str(tmp_path / "student"))
  assert np.isfinite(final["loss"]) and 10.0 < final["knn_top1/teacher"] <= 100.0
  # The same command again: the finished run reopens with the same (adopted) config and the same teacher.
  assert train.train_and_evaluate(c, str(tmp_path / "student"))["knn_top1/teacher"] == final["knn_top1/teacher"]
  saved = runs.read_run_config(str(tmp_path / "student")).model.teacher
  imagenet = configuration.base_config().data.augment
  assert (saved.cifar_stem, saved.in_channels, tuple(saved.input_mean), tuple(saved.input_std)) == (
    False,
    3,
    tuple(imagenet.mean),
    tuple(imagenet.std),
  )
  # The frozen teacher sees each grey view replicated to R = G = B and normalised with ImageNet's statistics.
  run = simdis_jax.load_encoder(str(tmp_path / "student"), network="teacher")
  x, _ = fixed_inputs(channels=1)
  grey = x * np.float32(c.data.augment.std[0]) + np.float32(c.data.augment.mean[0])
  rgb = (np.repeat(grey, 3, -1) - np.float32(imagenet.mean)) / np.float32(imagenet.std)
  with torch.no_grad():
    want = teacher.features(torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)))).numpy()
  np.testing.assert_allclose(np.asarray(run.apply_fn(run.variables, x)), want, atol=ATOL, rtol=1e-5)


def test_a_grey_teacher_on_colour_data_is_a_clear_error():
  from simdis_jax import offline_teacher  # pylint: disable=import-outside-toplevel

  run = tiny_config("byol", "byol")  # Fashion-MNIST: one channel
  c = tiny_config("simdis_off", "simdis_2v")
  c.data.name = "imagenette"
  c.teacher.workdir = "workdirs/grey_teacher"
  with pytest.raises(
    ValueError,
    match=r"is a 1-channel network but config.data.name='imagenette' has 3-channel "
    r"images: a grey image can go to a colour teacher",
  ):
    offline_teacher.teacher_section(c, run)
  c.data.name = "fashion_mnist"  # the same inputs: nothing to adapt, the section as trained
  section = offline_teacher.teacher_section(c, run)
  assert (section.in_channels, list(section.input_mean), section.width) == (0, [], run.model.student.width)


def test_the_input_map_undoes_the_data_normalisation_and_applies_the_networks_own():
  from simdis_jax.models import input_adapter  # pylint: disable=import-outside-toplevel

  assert input_adapter.affine(configuration.network_config(10, 4, True, 32, 16), (0.286,), (0.353,)) == ()
  x = np.random.default_rng(0).normal(size=(2, 4, 4, 1)).astype(np.float32)
  assert input_adapter.apply(x, ()) is x
  section = configuration.network_config(10, 4, True, 32, 16)
  section.in_channels, section.input_mean, section.input_std = 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  got = np.asarray(input_adapter.apply(x, input_adapter.affine(section, (0.286,), (0.353,))))
  pixels = x * 0.353 + 0.286
  np.testing.assert_allclose(
    got, (np.repeat(pixels, 3, -1) - section.input_mean) / section.input_std, rtol=1e-5, atol=1e-6
  )
