"""simdis_jax.load_encoder: the embedding API restores one network and embeds like the kNN monitor."""

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
  fn = features.make_feature_fn(module, config.data.augment, config.data.image_size,
                                parallel.make_mesh(jax.devices()[:1]))
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
  np.testing.assert_allclose(enc.embed(test_images / np.float32(255.0), value_range=(0, 1)), whole, rtol=1e-5, atol=1e-5)
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
  with pytest.raises(ValueError, match=r"images \[N, H, W, 1\]"):
    enc.embed(np.zeros((2, 28, 28, 3), np.uint8))
