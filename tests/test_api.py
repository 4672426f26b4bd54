"""simdis_jax.load_encoder: the embedding API restores one network and embeds like the kNN monitor."""

import os

import jax
import ml_collections
import numpy as np
import pytest

import simdis_jax
from conftest import requires_fashion_mnist
from simdis_jax import checkpoint, parallel, workdir as workdir_files
from simdis_jax.data import fashion_mnist
from simdis_jax.evaluation import features
from simdis_jax.state import build_networks

pytestmark = requires_fashion_mnist


@pytest.fixture(scope="module")
def test_images():
  """The first 40 Fashion-MNIST test images (uint8 [40, 28, 28, 1])."""
  return fashion_mnist.load()["test_images"][:40]


def monitor_features(workdir, network, weights, images):
  """What the kNN monitor computes for these images: make_feature_fn over the fully restored state."""
  config = ml_collections.ConfigDict(workdir_files.read_config(workdir))
  mgr = checkpoint.manager(workdir)
  state = mgr.restore(mgr.latest_step(), args=checkpoint.ocp.args.StandardRestore())
  mgr.close()
  net_state = state[network]
  prefix = "" if weights == "online" else "ema_"
  nets = build_networks(config)
  module = getattr(nets, network if weights == "online" else f"{network}_ema")
  variables = {"params": net_state[f"{prefix}params"], "batch_stats": net_state[f"{prefix}batch_stats"]}
  fn = features.make_feature_fn(
    module, config.data.augment, config.data.image_size, parallel.make_mesh(jax.devices()[:1])
  )
  return np.asarray(fn(variables, images))


@pytest.mark.parametrize("network", ["student", "teacher"])
@pytest.mark.parametrize("weights", ["online", "ema"])
def test_embed_equals_the_knn_monitor_features(tiny_run, test_images, network, weights):
  enc = simdis_jax.load_encoder(tiny_run, network=network, weights=weights, batch_size=40)
  got = enc.embed(test_images)
  want = monitor_features(tiny_run, network, weights, test_images)
  assert got.shape == (40, 32 if network == "student" else 64)  # ResNet-10 width 4 / 8: 8 × width
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert enc.step == 2
  # Only the chosen network's encoder + projector came back: no optimizer state, no predictors.
  assert set(enc.variables["params"]) == {"encoder", "projector"}


def test_embed_is_independent_of_the_batch_size_and_input_dtype(tiny_run, test_images):
  enc = simdis_jax.load_encoder(tiny_run)
  whole = enc.embed(test_images)
  for size in (1, 7, 16):
    np.testing.assert_allclose(enc.embed(test_images, batch_size=size), whole, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(enc.embed(test_images[:3, ..., 0]), whole[:3], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
    enc.embed(test_images / np.float32(255.0), value_range=(0, 1)), whole, rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(enc(test_images.astype(np.float64), value_range=(0, 255)), whole, rtol=1e-5, atol=1e-5)
  assert enc.embed(test_images[:0]).shape == (0, 32)


def test_project_gives_the_projector_output_and_apply_fn_is_plain_jax(tiny_run, test_images):
  enc = simdis_jax.load_encoder(tiny_run, project=True)
  z = enc.embed(test_images[:5])
  assert z.shape == (5, 16)  # tiny_config's proj_dim
  x = enc.preprocess(test_images[:5])
  np.testing.assert_allclose(np.asarray(jax.jit(enc.apply_fn)(enc.variables, x)), z, rtol=1e-6, atol=1e-6)


def test_bad_requests_are_clear_errors(tiny_run, tmp_path, test_images):
  with pytest.raises(ValueError, match="network='critic'"):
    simdis_jax.load_encoder(tiny_run, network="critic")
  with pytest.raises(ValueError, match="weights='best'"):
    simdis_jax.load_encoder(tiny_run, weights="best")
  with pytest.raises(FileNotFoundError, match="not a simdis_jax workdir"):
    simdis_jax.load_encoder(str(tmp_path))
  enc = simdis_jax.load_encoder(tiny_run)
  with pytest.raises(ValueError, match=r"Images must be \[N, H, W, 1\]"):
    enc.embed(np.zeros((2, 28, 28, 3), np.uint8))


def test_the_input_contract_is_enforced_never_guessed(tiny_run, test_images):
  """uint8 is 0..255; float must say its range; anything else is refused (int64 used to be taken as 0..1)."""
  enc = simdis_jax.load_encoder(tiny_run)
  with pytest.raises(ValueError, match=r"Float images \(float32\) need their range: pass value_range=\(0, 1\)"):
    enc(test_images.astype(np.float32))
  with pytest.raises(TypeError, match=r"dtype int64 are ambiguous: pass uint8 \(0..255\)"):
    enc(test_images.astype(np.int64))
  with pytest.raises(ValueError, match=r"span \[0, 255\], outside value_range=\(0, 1\)"):
    enc(test_images.astype(np.float32), value_range=(0, 1))
  with pytest.raises(ValueError, match=r"uint8 images are 0..255; value_range=\(0, 1\) does not apply"):
    enc(test_images, value_range=(0, 1))
  with pytest.raises(ValueError, match=r"shape \(28, 28, 1\) are ambiguous: pass a batch \[N, H, W, 1\]"):
    enc(test_images[0])


def test_the_encoder_reads_like_a_feature_extractor(tiny_run, test_images):
  enc = simdis_jax.load_encoder(tiny_run)
  np.testing.assert_array_equal(enc(test_images[:4]), enc.embed(test_images[:4]))
  assert enc.num_features == enc.feature_dim == 32
  text = repr(enc)
  assert "\n" not in text and len(text) < 250 and "Module" not in text, text
  assert text.startswith("Encoder(student/online of simdis_on at step 2: resnet-10 width 4, 16x16x1 -> 32 features")
  assert simdis_jax.__all__ == ["load_encoder", "Encoder"] and {"load_encoder", "Encoder"} <= set(dir(simdis_jax))
  for fn in (simdis_jax.load_encoder, simdis_jax.Encoder.embed, simdis_jax.Encoder.__call__):
    assert fn.__doc__ and fn.__annotations__.get("return") is not None, fn
  assert "Args:" in simdis_jax.load_encoder.__doc__ and "Raises:" in simdis_jax.Encoder.embed.__doc__
  with pytest.raises(TypeError):
    simdis_jax.load_encoder(tiny_run, "teacher")  # options are keywords: a positional one cannot land wrong


def test_a_missing_step_and_a_linear_eval_workdir_are_one_line(tiny_run, tmp_path):
  with pytest.raises(ValueError, match=r"has no checkpoint at step 999; its steps are \[1, 2\]"):
    simdis_jax.load_encoder(tiny_run, step=999)
  linear = str(tmp_path / "linear")
  os.makedirs(linear)
  workdir_files.write_json(
    linear, workdir_files.CONFIG_FILE, {"task": "linear_eval", "pretrained": {"workdir": tiny_run}}
  )
  with pytest.raises(ValueError) as e:
    simdis_jax.load_encoder(linear)
  assert str(e.value) == (
    f"{linear} is a linear-evaluation workdir, not a pretraining run: load the encoder from "
    f"the run it evaluated ({tiny_run})."
  )


def flip_student_params(workdir, step):
  """Flips one byte in every 512 of every array file of `step`, so that every array of 512 bytes or more (the
  student's params among them) is hit wherever orbax has laid it out: a single flip per file could land in
  an array that a partial restore of the student never reads (how this test once passed or failed by layout)."""
  import glob  # pylint: disable=import-outside-toplevel

  # The arrays are in the per-process OCDBT folder, or, once orbax has merged them, in the checkpoint's own d/.
  paths = glob.glob(f"{workdir}/checkpoints/{step}/default/ocdbt.process_*/d/*") or glob.glob(
    f"{workdir}/checkpoints/{step}/default/d/*"
  )
  assert paths, f"no array files under {workdir}/checkpoints/{step}"  # a flip that touches nothing proves nothing
  for path in paths:
    data = bytearray(open(path, "rb").read())
    for i in range(len(data) // 2 % 512, len(data), 512):
      data[i] ^= 0x40
    open(path, "wb").write(bytes(data))


def test_a_bit_flipped_latest_step_falls_back_to_the_previous_verified_one_with_one_warning(tiny_run, tmp_path, caplog):
  import shutil  # pylint: disable=import-outside-toplevel

  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_run, workdir)
  flip_student_params(workdir, 2)
  enc = simdis_jax.load_encoder(workdir)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert enc.step == 1 and len(warnings) == 1 and "using step 1, the newest intact one" in warnings[0], warnings
  want = simdis_jax.load_encoder(tiny_run, step=1).variables
  jax.tree.map(np.testing.assert_array_equal, enc.variables, want)
  with pytest.raises(checkpoint.NoIntactCheckpoint, match=r"step 2 .* is damaged: .* Its other steps are \[1\]"):
    simdis_jax.load_encoder(workdir, step=2)


def test_knn_of_a_damaged_chosen_step_is_one_line(tiny_run, tmp_path):
  """kNN reads through the same verified restore; a chosen damaged step is refused in one line, not a traceback."""
  import shutil  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_run, workdir)
  flip_student_params(workdir, 2)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
    [sys.executable, "-m", "simdis_jax.evaluation.knn", "--workdir", workdir, "--step", "2"],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=root,
    env=dict(os.environ, PYTHONPATH=root),
  )
  lines = [l for l in proc.stderr.splitlines() if l.startswith("knn: ")]
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert len(lines) == 1 and "step 2" in lines[0] and "is damaged" in lines[0] and "other steps are [1]" in lines[0]
