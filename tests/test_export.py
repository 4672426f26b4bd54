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
    # A wrong rank, size or dtype is refused in a short message naming the expected input (not pages of MLIR).
    for bad, expected in (
      (images[:, :, :, 0], "images must be uint8 [batch, 28, 28, 1]; got shape"),
      (images[:, :20], "images must be uint8 [batch, 28, 28, 1]; got shape"),
      (images.astype(np.float32), "expected to be a uint8 tensor but is a float tensor"),
    ):
      with pytest.raises(Exception) as e:
        export.run_saved_model(out, bad)
      assert expected in str(e.value) and len(str(e.value)) < 600, str(e.value)
  else:
    assert export.tflite_latency(out, images, repeats=3) > 0


def test_npz_holds_every_weight_and_describes_the_architecture(tiny_run, images, tmp_path):
  out = str(tmp_path / "exported" / "demo" / "student.npz")  # --out's folders are created
  assert export.main(["--workdir", tiny_run, "--format", "npz", "--out", out]) == 0
  assert sorted(os.listdir(tmp_path / "exported" / "demo")) == ["student.json", "student.npz"]
  enc = simdis_jax.load_encoder(tiny_run)
  with np.load(out) as data:
    np.testing.assert_array_equal(
      data["params/encoder/stem_conv/kernel"], np.asarray(enc.variables["params"]["encoder"]["stem_conv"]["kernel"])
    )
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


def test_bad_format_and_check_on_other_sizes_are_clear_errors(tiny_run, tmp_path, capsys):
  with pytest.raises(SystemExit):
    export.main(["--workdir", tiny_run, "--format", "onnx", "--out", str(tmp_path / "x")])
  assert (
    export.main(
      ["--workdir", tiny_run, "--format", "npz", "--out", str(tmp_path / "x.npz"), "--input_size", "32", "--check"]
    )
    == 2
  )
  assert "Fashion-MNIST's 28×28" in capsys.readouterr().err
  assert os.path.exists(tmp_path / "x.npz")


def _one_line_error(capsys, argv) -> str:
  assert export.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith("export: ") and "Traceback" not in err, err
  return err


def test_an_unwritable_out_or_a_missing_step_is_one_line_before_any_conversion(tiny_run, tmp_path, capsys, monkeypatch):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  monkeypatch.setattr(export.api, "load_encoder", lambda *a, **k: pytest.fail("converted before checking --out"))
  err = _one_line_error(capsys, ["--workdir", tiny_run, "--format", "npz", "--out", str(blocker / "s.npz")])
  assert f"--out {blocker / 's.npz'} cannot be written (Not a directory): choose a writable place" in err
  monkeypatch.undo()
  err = _one_line_error(
    capsys, ["--workdir", tiny_run, "--format", "npz", "--out", str(tmp_path / "new" / "s.npz"), "--step", "999"]
  )
  assert "has no checkpoint at step 999; its steps are [1, 2]" in err
  assert os.listdir(tmp_path) == ["a_file"]  # nothing half-written, not even --out's missing folder


def test_a_full_disk_while_writing_replaces_nothing(tiny_run, tmp_path, capsys, monkeypatch):
  out = tmp_path / "s.npz"
  out.write_bytes(b"an earlier export")

  def full(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(export.np, "savez", full)
  err = _one_line_error(capsys, ["--workdir", tiny_run, "--format", "npz", "--out", str(out)])
  assert "Writing" in err and "failed (No space left on device); nothing was replaced" in err
  assert out.read_bytes() == b"an earlier export" and sorted(os.listdir(tmp_path)) == ["s.npz"]


def test_a_bit_flipped_latest_step_is_exported_from_the_previous_verified_one_or_refused(
  tiny_run, tmp_path, capsys, caplog
):
  import shutil  # pylint: disable=import-outside-toplevel
  from test_api import flip_student_params  # pylint: disable=import-outside-toplevel

  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_run, workdir)
  flip_student_params(workdir, 2)
  out = str(tmp_path / "s.npz")
  assert export.main(["--workdir", workdir, "--format", "npz", "--out", out]) == 0
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "using step 1, the newest intact one" in warnings[0], warnings
  with open(export.json_path(out)) as f:
    assert json.load(f)["step"] == 1
  want = simdis_jax.load_encoder(tiny_run, step=1).variables["params"]["encoder"]["stem_conv"]["kernel"]
  with np.load(out) as data:
    np.testing.assert_array_equal(data["params/encoder/stem_conv/kernel"], np.asarray(want))
    assert all(np.isfinite(data[k]).all() for k in data.files)
  err = _one_line_error(capsys, ["--workdir", workdir, "--format", "npz", "--out", out, "--step", "2"])
  assert "step 2" in err and "is damaged" in err and "Its other steps are [1]" in err
