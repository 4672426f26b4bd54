"""Streaming input (simdis_jax.data.pipeline and data.sources): host crops, exact resume, per-host shards, image
folders, ImageNet on mock data."""

import io
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import tiny_tfds
from conftest import tiny_config
from simdis_jax import configuration, parallel, train
from simdis_jax.data import augment, host_crops, pipeline, sources
from simdis_jax.evaluation import knn, linear, linear_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  """A real prepared tfds dataset (JPEG records): 96 train / 40 test images of 40-72 px."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tiny_tfds.build(data_dir)
  return data_dir


def tiny_data(data_dir, label_key="label"):
  d = configuration.data_config("tiny_images")
  d.data_dir = data_dir
  d.image_size = 24
  d.eval_split = "test"
  d.label_key = label_key  # "index": labels are the example indices, to check order and coverage
  d.shuffle_buffer = 32
  return d


def encode(image: np.ndarray, fmt: str) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format=fmt, quality=90)
  return buf.getvalue()


def smooth_image(h, w, seed=0):
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w]
  base = np.stack([x / w, y / h, (x + y) / (h + w)], -1) * 200
  return np.clip(base + rng.normal(0, 5, (h, w, 3)), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ host ops


def test_random_crop_windows_respect_area_aspect_and_bounds():
  shape = tf.constant([375, 500], tf.int32)
  areas, aspects = [], []
  for i in range(300):
    top, left, h, w = host_crops.random_crop_window(shape, tf.constant([7, i]), (0.08, 1.0), (3 / 4, 4 / 3)).numpy()
    assert 0 <= top and 0 <= left and top + h <= 375 and left + w <= 500 and h > 0 and w > 0
    areas.append(h * w / (375 * 500))
    aspects.append(w / h)
  assert 0.075 <= min(areas) and max(areas) <= 1.0 and np.ptp(areas) > 0.5
  assert 0.74 <= min(aspects) and max(aspects) <= 1.35
  # Stateless: the same seed gives the same window.
  a = host_crops.random_crop_window(shape, tf.constant([1, 2]), (0.08, 1.0), (3 / 4, 4 / 3)).numpy()
  b = host_crops.random_crop_window(shape, tf.constant([1, 2]), (0.08, 1.0), (3 / 4, 4 / 3)).numpy()
  np.testing.assert_array_equal(a, b)


def test_centre_crop_window_is_the_centred_square_of_the_short_side():
  window = host_crops.centre_crop_window(tf.constant([375, 500]), 0.875).numpy()
  np.testing.assert_array_equal(window, [23, 86, 328, 328])  # round(0.875 * 375) = 328


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_window_decode_equals_full_decode_then_slice(fmt):
  image = smooth_image(60, 80)
  encoded = tf.constant(encode(image, fmt))
  window = tf.constant([5, 11, 30, 40])
  cropped = host_crops._decode_window(encoded, lambda shape: window, 3).numpy()  # pylint: disable=protected-access
  full = tf.io.decode_image(encoded, channels=3).numpy()
  np.testing.assert_array_equal(cropped, full[5:35, 11:51])
  if fmt == "PNG":
    np.testing.assert_array_equal(cropped, image[5:35, 11:51])


def test_train_crops_are_uint8_views_of_the_right_size_and_differ_between_views():
  encoded = tf.constant(encode(smooth_image(375, 500), "JPEG"))
  crops = host_crops.train_crops(encoded, tf.constant([3, 4], tf.int64), 2, 224, (0.08, 1.0), (3 / 4, 4 / 3)).numpy()
  assert crops.shape == (2, 224, 224, 3) and crops.dtype == np.uint8
  assert not np.array_equal(crops[0], crops[1])
  again = host_crops.train_crops(encoded, tf.constant([3, 4], tf.int64), 2, 224, (0.08, 1.0), (3 / 4, 4 / 3)).numpy()
  np.testing.assert_array_equal(crops, again)


def test_device_side_of_host_crops_skips_the_crop_and_keeps_the_other_ops():
  import jax  # pylint: disable=import-outside-toplevel

  crops = np.random.default_rng(0).integers(0, 256, (4, 2, 16, 16, 3), dtype=np.uint8)
  config = augment.default_config(3)
  v1, v2 = augment.two_views_of_crops(jax.random.PRNGKey(0), crops, config)
  assert v1.shape == v2.shape == (4, 16, 16, 3)
  # With every random op off, the device views are exactly the normalised host crops.
  plain = augment.default_config(3)
  plain.flip, plain.jitter_prob, plain.grey_prob = False, 0.0, 0.0
  plain.blur_prob, plain.solarize_prob = (0.0, 0.0), (0.0, 0.0)
  p1, p2 = augment.two_views_of_crops(jax.random.PRNGKey(0), crops, plain)
  mean, std = np.asarray(plain.mean), np.asarray(plain.std)
  np.testing.assert_allclose(p1, (crops[:, 0] / 255.0 - mean) / std, atol=1e-5)
  np.testing.assert_allclose(p2, (crops[:, 1] / 255.0 - mean) / std, atol=1e-5)


# ------------------------------------------------------ order, resume, shards


def collect(iterator, count):
  out = []
  for _ in range(count):
    step, images, labels = next(iterator)
    out.append((step, np.asarray(images), np.asarray(labels)))
  return out


def test_batches_are_a_function_of_seed_and_step_and_resume_bitwise(tiny_dir):
  ds = pipeline.load(tiny_data(tiny_dir, label_key="index"))
  mesh = parallel.make_mesh()
  assert ds.num_train == 96 and ds.train.num_examples == 96
  run = collect(ds.train_batches(0, 0, 16, mesh), 14)  # 6 steps per epoch: epochs 0, 1 and two steps of 2
  assert [s for s, _, _ in run] == list(range(14))
  assert run[0][1].shape == (16, 2, 24, 24, 3) and run[0][1].dtype == np.uint8
  for epoch in (0, 1):
    seen = np.concatenate([labels for _, _, labels in run[6 * epoch : 6 * epoch + 6]])
    np.testing.assert_array_equal(np.sort(seen), np.arange(96))  # every example once per epoch
  assert not np.array_equal(run[0][2], run[6][2])  # a new order each epoch
  # A restart at step 8 (mid-epoch 1) and at 12 (an epoch boundary) sees exactly the same batches.
  for start in (8, 12):
    resumed = collect(ds.train_batches(0, start, 16, mesh), 2)
    for (s, images, labels), (s0, images0, labels0) in zip(resumed, run[start : start + 2]):
      assert s == s0
      np.testing.assert_array_equal(labels, labels0)
      np.testing.assert_array_equal(images, images0)
  other = collect(pipeline.load(tiny_data(tiny_dir, label_key="index")).train_batches(1, 0, 16, mesh), 1)
  assert not np.array_equal(other[0][2], run[0][2])


def read_positions(source, seed=0, epoch=0):
  return [(int(p), int(label)) for p, _, label in source.records(seed, epoch, 0).as_numpy_iterator()]


def test_process_shards_are_disjoint_and_cover_the_split(tiny_dir):
  data = tiny_data(tiny_dir, label_key="index")
  shards = [sources.TfdsSource(data, "train", p, 2) for p in range(2)]
  indices = [sorted(label for _, label in read_positions(s)) for s in shards]
  assert [len(i) for i in indices] == [48, 48] and [s.num_examples for s in shards] == [48, 48]
  assert not set(indices[0]) & set(indices[1])
  assert sorted(indices[0] + indices[1]) == list(range(96))
  # Three hosts: equal shards of 32, still disjoint.
  thirds = [set(label for _, label in read_positions(sources.TfdsSource(data, "train", p, 3))) for p in range(3)]
  assert [len(t) for t in thirds] == [32] * 3 and len(set.union(*thirds)) == 96


def test_eval_batches_cover_the_held_out_split_once_with_a_masked_tail(tiny_dir):
  ds = pipeline.load(tiny_data(tiny_dir, label_key="index"))
  mesh = parallel.make_mesh()
  batches = list(ds.eval_batches("eval", 0, 16, mesh))
  assert len(batches) == 3 and batches[0]["images"].shape == (16, 24, 24, 3)
  masks = np.concatenate([np.asarray(b["mask"]) for b in batches])
  labels = np.concatenate([np.asarray(b["labels"]) for b in batches])[masks]
  np.testing.assert_array_equal(np.sort(labels), np.arange(40))  # each once, in the files' stored order
  again = np.concatenate([np.asarray(b["labels"]) for b in ds.eval_batches("eval", 0, 16, mesh)])[masks]
  np.testing.assert_array_equal(labels, again)
  assert masks.sum() == 40 and ds.num_examples("eval") == 40
  first = list(ds.eval_batches("train", 20, 16, mesh))
  assert sum(int(np.asarray(b["mask"]).sum()) for b in first) == 20


# -------------------------------------------------------------- image folders


def make_folder(root, good=30, bad=()):
  os.makedirs(root / "sub", exist_ok=True)
  rng = np.random.default_rng(0)
  for i in range(good):
    fmt, ext = ("PNG", "png") if i % 5 == 0 else ("JPEG", "jpg")
    h, w = rng.integers(40, 90, size=2)
    (root / ("sub" if i % 2 else "") / f"img{i:03d}.{ext}").write_bytes(encode(smooth_image(h, w, i), fmt))
  for name in bad:
    (root / name).write_bytes(
      b"not an image at all" if "garbage" in name else encode(smooth_image(64, 64), "JPEG")[:120]
    )
  (root / "notes.txt").write_text("ignored: not an image")
  return root


def test_folder_skips_unreadable_files_counts_and_logs_them(tmp_path, caplog):
  folder = make_folder(tmp_path / "frames", good=30, bad=("garbage.jpg", "truncated.jpg"))
  data = configuration.data_config("folder")
  data.folder = str(folder)
  data.image_size = 24
  ds = pipeline.load(data)
  assert ds.num_train == 32 and ds.num_classes == 0 and not ds.labelled
  mesh = parallel.make_mesh()
  with caplog.at_level(logging.WARNING):
    run = collect(ds.train_batches(0, 0, 16, mesh), 4)  # two epochs of two steps
  assert all(images.shape == (16, 2, 24, 24, 3) for _, images, _ in run)
  assert all((labels == -1).all() for _, _, labels in run)
  assert ds.stats["skipped"] == 4  # both bad files, in each of the two epochs
  assert "garbage.jpg" in caplog.text and "truncated.jpg" in caplog.text
  # Skipping is deterministic: a restart at step 3 sees the same batch.
  resumed = collect(pipeline.load(data).train_batches(0, 3, 16, mesh), 1)
  np.testing.assert_array_equal(resumed[0][1], run[3][1])
  # Two hosts read disjoint halves of the files.
  shards = [set(sources.FolderSource(str(folder), p, 2).files) for p in range(2)]
  assert len(shards[0]) == len(shards[1]) == 16 and not shards[0] & shards[1]


def test_an_empty_or_missing_folder_is_a_clear_error(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "readme.txt").write_text("no images here")
  with pytest.raises(sources.DatasetNotFoundError, match="holds no image files"):
    sources.FolderSource(str(tmp_path / "empty"), 0, 1)
  with pytest.raises(sources.DatasetNotFoundError, match="neither a directory nor a glob"):
    sources.FolderSource(str(tmp_path / "missing"), 0, 1)
  c = tiny_config("byol", "byol")
  c.data.name = "folder"
  with pytest.raises(ValueError, match="needs config.data.folder"):
    configuration.validate(c)
  c.data.folder = str(tmp_path / "empty")
  with pytest.raises(ValueError, match="has no labels.*knn.networks"):
    configuration.validate(c)


# ------------------------------------------------------------- end to end


def test_folder_pretraining_with_labelled_tfds_evaluation_and_full_linear_eval(tmp_path, tiny_dir):
  """Pretrain on a folder (kNN on a labelled tfds dataset), then linear-evaluate in full mode, all streamed."""
  folder = make_folder(tmp_path / "frames", good=32, bad=("garbage.jpg",))
  c = tiny_config("byol", "byol")
  c.data = tiny_data(tiny_dir)
  c.data.name, c.data.folder, c.data.eval_name = "folder", str(folder), "tiny_images"
  c.data.image_size = 16
  c.data.augment = augment.default_config(3)
  c.knn.train_examples, c.knn.eval_examples, c.knn.k, c.knn.batch_size = 48, 16, 5, 16
  c.knn.networks = ("student",)
  c.train.steps = 2
  workdir = str(tmp_path / "pretrain")
  final = train.train_and_evaluate(c, workdir)
  assert np.isfinite(final["loss"])
  # The monitor's kNN is the standalone kNN of the saved checkpoint (same k, subsets and streamed batches).
  standalone = knn.evaluate_checkpoint(workdir, ks=(5,), train_examples=48, eval_examples=16)
  assert final["knn_top1/student"] == standalone["knn_top1/k5"]
  lc = linear_config.base_config()
  lc.pretrained.workdir = workdir
  lc.mode = "full"
  lc.train.steps = 3
  lc.train.batch_size = 16
  lc.eval.batch_size = 16
  lc.data.train_examples, lc.data.eval_examples = 48, 16
  result = linear.run(lc, str(tmp_path / "linear"))
  assert result["steps"] == 3 and result["train_examples"] == 48 and result["eval_examples"] == 16
  correct = result["top1"] * 16 / 100  # a whole number of the 16 held-out images
  assert result["num_classes"] == tiny_tfds.NUM_CLASSES and abs(correct - round(correct)) < 1e-9
  assert result["top1"] <= result["top5"]


def load_config(path):
  import importlib.util  # pylint: disable=import-outside-toplevel

  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_imagenet_preset_trains_on_mock_imagenet_through_the_real_pipeline(tmp_path):
  c = load_config("configs/imagenet/byol_r18.py")
  assert (c.data.name, c.data.pretrain_split, c.data.eval_split, c.data.image_size) == (
    "imagenet2012",
    "train",
    "validation",
    224,
  )
  with tfds.testing.mock_data(num_examples=48):
    ds = pipeline.load(c.data)
    step, images, _ = next(ds.train_batches(0, 0, 16, parallel.make_mesh()))
    assert step == 0 and images.shape == (16, 2, 224, 224, 3) and ds.num_classes == 1000
    batch = next(iter(ds.eval_batches("eval", 16, 16, parallel.make_mesh())))
    assert batch["images"].shape == (16, 224, 224, 3) and int(np.asarray(batch["mask"]).sum()) == 16
    # One train step of the preset, its networks narrowed and its images smaller so that it fits a CPU test.
    # (No kNN here: mock_data redirects file access while it reads, which races with the async checkpoint.)
    c.model.student.width = 4
    c.model.student.hidden_dim, c.model.student.proj_dim = 32, 16
    c.data.image_size = 32
    c.train.batch_size, c.train.steps = 16, 1
    c.knn.networks = ()
    final = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert np.isfinite(final["loss"]) and final["loss_student"] > 0


def test_two_processes_read_disjoint_shards_into_one_global_batch(tmp_path):
  """2 processes × 2 CPU devices over loopback: each reads its own files; the global batch is both halves."""
  import socket  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  folder = make_folder(tmp_path / "frames", good=24)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  script = os.path.join(ROOT, "tests", "streaming_process.py")
  env = dict(os.environ, PYTHONPATH=ROOT)
  procs = [
    subprocess.Popen(
      [sys.executable, script, str(port), str(i), str(folder), str(tmp_path)],
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
  out = [np.load(tmp_path / f"process{i}.npz") for i in range(2)]
  assert not set(out[0]["files"]) & set(out[1]["files"]) and len(out[0]["files"]) == len(out[1]["files"]) == 12
  for step in (0, 1):
    glob_ = out[0][f"global{step}"]
    assert glob_.shape == (8, 2, 16, 16, 3)
    np.testing.assert_array_equal(glob_, out[1][f"global{step}"])
    np.testing.assert_array_equal(glob_[:4], out[0][f"local{step}"])  # process 0's slice, then process 1's
    np.testing.assert_array_equal(glob_[4:], out[1][f"local{step}"])


def test_a_misspelt_tfds_name_is_a_clear_error_with_the_suggestion():
  data = configuration.data_config("imagnet2012")
  with pytest.raises(sources.DatasetNotFoundError, match="not a tfds dataset.*imagenet2012.*folder"):
    pipeline.load(data)
