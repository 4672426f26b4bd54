"""The report's embedding maps: t-SNE of held-out features, deterministic, drawn from a real checkpoint."""

import os
import shutil

import matplotlib.image
import numpy as np

from conftest import requires_fashion_mnist
from simdis_jax.evaluation import embedding_map, report, report_workdirs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The long study's BYOL teacher, committed with its final checkpoint (ResNet-10 w16, Fashion-MNIST).
TEACHER = os.path.join(ROOT, "results", "fashion_mnist_long", "runs", "byol_teacher_e20", "seed0")


def test_tsne_is_deterministic_and_keeps_separate_classes_apart():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 64)) * 4.0
  classes = np.repeat(np.arange(3), 60)
  feats = (centres[classes] + rng.normal(size=(180, 64))).astype(np.float32)
  xy = embedding_map.tsne_2d(feats)
  assert xy.shape == (180, 2) and np.isfinite(xy).all()
  np.testing.assert_array_equal(xy, embedding_map.tsne_2d(feats))  # same input, same map, bit for bit
  means = np.stack([xy[classes == c].mean(0) for c in range(3)])
  spread = max(np.linalg.norm(xy[classes == c] - means[c], axis=1).mean() for c in range(3))
  gaps = [np.linalg.norm(means[a] - means[b]) for a in range(3) for b in range(a + 1, 3)]
  assert min(gaps) > 2 * spread, (gaps, spread)


def test_only_trained_networks_get_a_map():
  assert embedding_map.trained_networks({"method": "simdis_on"}) == ("student", "teacher")
  for method in ("byol", "simdis_off", "seed", "moco_v2", "supervised"):
    assert embedding_map.trained_networks({"method": method}) == ("student",)  # a frozen teacher is not trained here


@requires_fashion_mnist
def test_a_finished_run_gets_its_map_from_its_checkpoint(tmp_path, capsys):
  run_dir = tmp_path / "byol_teacher_e20"
  shutil.copytree(TEACHER, run_dir)
  feats = embedding_map.heldout_features(str(run_dir), ("student",), 300)
  x, y = feats["student"]
  assert x.shape == (300, 128) and sorted(set(y.tolist())) == list(range(10))  # the held-out subset, all classes
  x2, y2 = embedding_map.heldout_features(str(run_dir), ("student",), 300)["student"]
  np.testing.assert_array_equal(y, y2)  # the same images every time (the run's seed)
  np.testing.assert_allclose(x, x2, atol=1e-6)
  out = tmp_path / "out"
  out.mkdir()
  written = embedding_map.write_maps([report_workdirs.load_pretrain_run(str(run_dir))], str(out), points=300)
  assert written == ["embedding_byol_teacher_e20.png"]
  image = matplotlib.image.imread(str(out / written[0]))
  assert image.shape[0] >= 400 and image.std() > 0
  # Without checkpoints (a copied record): a note, no map, and the rest of the report is still written.
  shutil.rmtree(run_dir / "checkpoints")
  markdown = report.write_report([str(run_dir)], str(tmp_path / "out2"), embedding_points=300)
  assert "embedding_" not in markdown and "holds no checkpoints" in capsys.readouterr().err
