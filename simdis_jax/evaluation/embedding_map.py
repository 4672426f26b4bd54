"""The report's embedding maps: a 2-D t-SNE of each trained network's test-set features, coloured by class.

For every finished pretraining run the report is given, the networks the run trained (the student;
SimDis-On's teacher too) are restored from the last checkpoint (runs.restore: the verified path), a
fixed subset of the held-out split (`points` images, no more than the run's kNN queries, drawn with the
run's seed as they are)
goes through the encoder in eval mode (the kNN's features), and scikit-learn's t-SNE maps them to 2-D
(L2-normalised features, whose distances order neighbours as the kNN's cosine similarity does; PCA to 50
dimensions, PCA initialisation, random_state 0, one thread). Same checkpoint, same picture.
JAX and scikit-learn are imported only here and only when a map is drawn, so the rest of the report
still runs on a machine without them (the maps are then skipped with a note).
"""

import os
import re
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

from simdis_jax.data import datasets
from simdis_jax.evaluation import figures

POINTS = 2000
PCA_DIMS = 50  # t-SNE on the leading principal components: the usual speed-up, the same neighbourhoods
# 250 iterations of early exaggeration, then 250 more: the classes' layout is settled by then, at half
# the time of scikit-learn's default 1,000 (what the demo's budget of minutes affords).
TSNE_ITERATIONS = 500


def trained_networks(config: dict) -> Tuple[str, ...]:
  """The networks a run trained: the student, and SimDis-On's teacher (SimDis-Off's and SEED's are frozen)."""
  from simdis_jax import methods  # pylint: disable=import-outside-toplevel

  return ("student", "teacher") if methods.teacher_kind(config) == "online" else ("student",)


def file_name(run_name: str) -> str:
  """embedding_<run>.png with characters unsafe in file names replaced."""
  return f"embedding_{re.sub(r'[^A-Za-z0-9._-]+', '_', run_name) or 'run'}.png"


def tsne_2d(feats: np.ndarray, seed: int = 0) -> np.ndarray:
  """[N, 2] t-SNE of L2-normalised features (PCA to PCA_DIMS first), deterministic for a given input."""
  # pylint: disable=import-outside-toplevel
  import threadpoolctl
  from sklearn.decomposition import PCA
  from sklearn.manifold import TSNE

  # pylint: enable=import-outside-toplevel
  x = feats.astype(np.float64)
  x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  perplexity = min(30.0, max(2.0, (x.shape[0] - 1) / 3.0))
  # One thread: on a busy 2-core machine OpenMP's spinning threads cost 4x the CPU time (44 s against 10 s
  # for 2,000 points), and one thread's sums are the same on every run.
  with threadpoolctl.threadpool_limits(1):
    if x.shape[1] > PCA_DIMS and x.shape[0] > PCA_DIMS:
      x = PCA(PCA_DIMS, random_state=seed).fit_transform(x)
    return TSNE(
      2, perplexity=perplexity, init="pca", learning_rate="auto", max_iter=TSNE_ITERATIONS, random_state=seed
    ).fit_transform(x)


def heldout_features(workdir: str, networks: Sequence[str], points: int):
  """{network: (features [N, d], labels [N])} of a run's last checkpoint on `points` held-out images (at most)."""
  # pylint: disable=import-outside-toplevel
  import logging

  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's import-time notices are not the report's business
  from simdis_jax import parallel, runs
  from simdis_jax.data import input as data_input
  from simdis_jax.evaluation import features

  # pylint: enable=import-outside-toplevel
  mesh = parallel.make_mesh()
  config, nets, state, _ = runs.restore(workdir, mesh)
  dataset = data_input.load_dataset(config.data)
  # No more images than the run's kNN queries: a run evaluated on a small subset gets a map of that size.
  points = min(points, config.knn.eval_examples) if config.knn.eval_examples else points
  out = {}
  for name in networks:
    net, net_state = getattr(nets, name, None), getattr(state, name, None)
    if net is None or net_state is None:
      continue
    fn = features.make_feature_fn(net, dataset.device_augment_config(config.data.augment), config.data.image_size, mesh)
    batches = dataset.eval_batches("eval", points, config.knn.batch_size, mesh, config.seed)
    out[name] = features.extract_features(
      lambda images, fn=fn, v=features.encoder_variables(net_state): fn(v, images), batches
    )
  return out


def write_maps(runs, out_dir: str, points: int = POINTS) -> List[str]:
  """Draws embedding_<run>.png for each finished run with checkpoints; returns the files written."""
  written = []
  for run in runs:
    if not run.finished or points <= 0:
      continue
    note = _draw(run, out_dir, points)
    if note is None:
      written.append(file_name(run.name))
    else:
      print(f"simdis_jax.report: note: no embedding map for {run.name}: {note}", file=sys.stderr)
  return written


def _draw(run, out_dir: str, points: int) -> Optional[str]:
  """Draws one run's map; returns why not (None when drawn)."""
  try:
    import sklearn  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    import jax  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    return f"{e} (pip install scikit-learn, or pass --noembeddings)"
  if not os.path.isdir(os.path.join(run.workdir, "checkpoints")):
    return "its workdir holds no checkpoints"
  try:
    feats = heldout_features(run.workdir, trained_networks(run.config), points)
  except (OSError, ValueError, KeyError) as e:
    return f"{type(e).__name__}: {e}"
  if not feats:
    return "no trained network found in its checkpoint"
  maps = {name: (tsne_2d(f), labels) for name, (f, labels) in feats.items()}
  data = run.config.get("data", {}).get("name")
  figures.plot_embedding_maps(
    maps,
    datasets.get(data).class_names or None,
    f"{run.name}: test-set embeddings (t-SNE)",
    os.path.join(out_dir, file_name(run.name)),
  )
  return None
