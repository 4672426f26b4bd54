"""python -m simdis_jax.export: SavedModel / TFLite / npz exports compute what JAX computes.

Tolerance: float32 exports agree with JAX's features to 2e-5 absolute + 1e-5 relative
(measured ~1e-6 on features of magnitude ~5: XLA and TF kernels sum in different orders).
"""

import json
import os

import numpy as np
import pytest

import simdis_jax
from conftest import requires_fashion_mnist
from simdis_jax import configuration, export
from simdis_jax.data import fashion_mnist

pytestmark = requires_fashion_mnist
ATOL, RTOL = 2e-5, 1e-5


@pytest.fixture(scope="module")
def images():
  """Five real test images: a batch size that no export traced (the batch is symbolic; TFLite's default is 1)."""
  return fashion_mnist.load()["test_images"][:5]


@pytest.mark.parametrize("fmt", ["saved_model", "tflite"])
def test_tf_exports_match_jax(tiny_run, images, tmp_path, fmt):
  out = str(tmp_path / f"student.{fmt}")
  assert export.main(["--workdir", tiny_run, "--format", fmt, "--out", out]) == 0
  want = simdis_jax.load_encoder(tiny_run).embed(images)
  got = export.run_saved_model(out, images) if fmt == "saved_model" else export.run_tflite(out, images)
  assert got.shape == want.shape == (5, 32) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)
  if fmt == "saved_model":  # dynamic batch: one image through the same signature
    np.testing.assert_allclose(export.run_saved_model(out, images[:1]), want[:1], atol=ATOL, rtol=RTOL)
  else:
    assert export.tflite_latency(out, images, repeats=3) > 0


def test_npz_holds_every_weight_and_describes_the_architecture(tiny_run, images, tmp_path):
  out = str(tmp_path / "student.npz")
  export.main(["--workdir", tiny_run, "--format", "npz", "--out", out])
  enc = simdis_jax.load_encoder(tiny_run)
  with np.load(out) as data:
    np.testing.assert_array_equal(data["params/encoder/stem_conv/kernel"],
                                  np.asarray(enc.variables["params"]["encoder"]["stem_conv"]["kernel"]))
    assert data["params/encoder/stem_conv/kernel"].shape == (3, 3, 1, 4)  # HWIO, CIFAR stem
    assert "batch_stats/encoder/stem_bn/var" in data
  np.testing.assert_array_equal(export.run_npz(out, images, enc), enc.embed(images))
  with open(out[:-4] + ".json") as f:
    arch = json.load(f)
  assert arch["model"] == dict(configuration.network_config(10, 4, True, 32, 16))
  assert arch["feature_dim"] == 32 and arch["input"]["shape"] == [None, 28, 28, 1]
  assert arch["preprocessing"]["image_size"] == 16


def test_check_prints_the_max_error(tiny_run, tmp_path, capsys):
  export.main(["--workdir", tiny_run, "--format", "npz", "--out", str(tmp_path / "s.npz"), "--check"])
  line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("check:")][0]
  assert "100 Fashion-MNIST test images" in line and float(line.split("= ")[1].split()[0]) == 0.0


def test_bad_format_and_check_on_other_sizes_are_clear_errors(tiny_run, tmp_path):
  with pytest.raises(SystemExit):
    export.main(["--workdir", tiny_run, "--format", "onnx", "--out", str(tmp_path / "x")])
  with pytest.raises(ValueError, match="Fashion-MNIST's 28×28"):
    export.main(["--workdir", tiny_run, "--format", "npz", "--out", str(tmp_path / "x.npz"), "--input_size", "32",
                 "--check"])
  assert os.path.exists(tmp_path / "x.npz")
