"""Weighted cosine kNN on frozen features (the InstDisc/DINO monitor).

Each query takes its k most cosine-similar memory-bank examples; neighbour i
votes for its class with weight exp(sim_i / T); the class with the largest
summed vote wins.
"""

import functools
import os
import sys
from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from simdis_jax import parallel, runs
from simdis_jax.data import input as data_input
from simdis_jax.evaluation import features
from simdis_jax.methods.simdis import l2_normalize


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def knn_scores(bank: jnp.ndarray, bank_labels: jnp.ndarray, queries: jnp.ndarray, k: int, temperature: float,
               num_classes: int) -> jnp.ndarray:
  """Class scores [Q, C] of each query from its k nearest (cosine) bank examples."""
  sims = l2_normalize(queries) @ l2_normalize(bank).T
  top_sims, top_idx = jax.lax.top_k(sims, k)
  weights = jnp.exp(top_sims / temperature)
  votes = jax.nn.one_hot(bank_labels[top_idx], num_classes) * weights[..., None]
  return jnp.sum(votes, axis=1)


def knn_classify(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, k: int = 20,
                 temperature: float = 0.07, num_classes: int = 0, chunk: int = 1024) -> Tuple[np.ndarray, np.ndarray]:
  """Returns (top-1 predictions [Q], class scores [Q, C]); k larger than the bank is an error."""
  if k > bank.shape[0]:
    raise ValueError(f"kNN with k={k} needs at least k memory-bank examples, but the bank holds "
                     f"{bank.shape[0]}; lower config.knn.k or raise config.knn.train_examples.")
  num_classes = num_classes or int(bank_labels.max()) + 1
  scores = [np.asarray(knn_scores(bank, bank_labels, queries[i:i + chunk], k, temperature, num_classes))
            for i in range(0, queries.shape[0], chunk)]
  scores = np.concatenate(scores)
  return scores.argmax(-1), scores


def bank_and_queries(network, variables, dataset, aug_config, image_size: int, mesh, train_examples: int,
                     eval_examples: int, batch_size: int, seed: int = 0):
  """Encoder features and labels of the memory bank (train split) and the queries (held-out split)."""
  fn = functools.partial(features.make_feature_fn(network, dataset.device_augment_config(aug_config), image_size,
                                                  mesh), variables)
  return (features.extract_features(fn, dataset.eval_batches("train", train_examples, batch_size, mesh, seed)),
          features.extract_features(fn, dataset.eval_batches("eval", eval_examples, batch_size, mesh, seed)))


def knn_accuracy(network, variables, dataset, knn_config, aug_config, image_size: int, mesh,
                 seed: int = 0) -> Dict[str, float]:
  """Top-1 kNN accuracy (%) of a network's encoder: train split as the bank, held-out split as queries."""
  (bank, bank_y), (queries, query_y) = bank_and_queries(
      network, variables, dataset, aug_config, image_size, mesh, knn_config.train_examples,
      knn_config.eval_examples, knn_config.batch_size, seed)
  pred, _ = knn_classify(bank, bank_y, queries, knn_config.k, knn_config.temperature, dataset.num_classes)
  return {"knn_top1": float(100.0 * np.mean(pred == query_y))}


def evaluate_checkpoint(workdir: str, network: str = "student", weights: str = "online", ks=(20, 200),
                        temperature: float = 0.07, step: Optional[int] = None, train_examples: int = 0,
                        eval_examples: int = 0, holdout: Optional[str] = None) -> Dict[str, float]:
  """Standalone kNN top-1 (for each k) of one encoder of any pretraining checkpoint.

  `holdout` (Fashion-MNIST; docs/input.md) replaces the run's config.data.holdout, e.g. 'test' to read the
  test set once for a run that was monitored on the validation split.
  """
  mesh = parallel.make_mesh()
  run_config, networks, state, _ = runs.restore(workdir, mesh, step)
  net, net_state = getattr(networks, network, None), getattr(state, network, None)
  if net is None or net_state is None:
    raise ValueError(f"{workdir} is a {run_config.method!r} run without a {network!r} network.")
  if holdout is not None:
    run_config.data.holdout = holdout
  dataset = data_input.load_dataset(run_config.data)
  (bank, bank_y), (queries, query_y) = bank_and_queries(
      net, features.encoder_variables(net_state, weights), dataset, run_config.data.augment, run_config.data.image_size,
      mesh, train_examples, eval_examples, run_config.knn.batch_size, run_config.seed)
  results = {"step": int(state.step)}
  for k in ks:
    pred, _ = knn_classify(bank, bank_y, queries, k, temperature, dataset.num_classes)
    results[f"knn_top1/k{k}"] = float(100.0 * np.mean(pred == query_y))
  return results


def main(argv=None) -> int:
  """python -m simdis_jax.evaluation.knn --workdir <pretraining workdir> [--network teacher] [--k 20 200]."""
  import argparse  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description="Weighted cosine kNN of a pretraining checkpoint's encoder.")
  parser.add_argument("--workdir", required=True, help="a simdis_jax pretraining workdir")
  parser.add_argument("--network", default="student", choices=("student", "teacher"))
  parser.add_argument("--weights", default="online", choices=("online", "ema"))
  parser.add_argument("--k", type=int, nargs="+", default=[20, 200])
  parser.add_argument("--temperature", type=float, default=0.07)
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--train_examples", type=int, default=0, help="memory-bank subset (0 = all)")
  parser.add_argument("--eval_examples", type=int, default=0, help="query subset (0 = all)")
  parser.add_argument("--holdout", default=None, choices=("none", "validation", "test"),
                      help="Fashion-MNIST's split to evaluate on (default: the run's config.data.holdout)")
  parser.add_argument("--out", default="", help="also write the JSON to this file")
  args = parser.parse_args(argv)
  if args.step is not None:  # checked before anything is built: orbax's own error names no steps
    from simdis_jax import runs  # pylint: disable=import-outside-toplevel
    steps = runs.checkpoint_steps(args.workdir)
    if args.step not in steps:
      print(f"knn: {args.workdir} has no checkpoint at step {args.step}; its steps are {steps or 'none'}.",
            file=sys.stderr)
      return 2
  try:
    results = evaluate_checkpoint(args.workdir, args.network, args.weights, tuple(args.k), args.temperature,
                                  args.step, args.train_examples, args.eval_examples, args.holdout)
  except (ValueError, OSError, RuntimeError) as e:  # a damaged step (NoIntactCheckpoint), a bad run: one line
    print(f"knn: {e}", file=sys.stderr)
    return 2
  record = {"workdir": args.workdir, "network": args.network, "weights": args.weights,
            "holdout": args.holdout, **results}
  print(json.dumps(record))
  if args.out:
    from simdis_jax import workdir as workdir_files  # pylint: disable=import-outside-toplevel
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    workdir_files.write_json(os.path.dirname(os.path.abspath(args.out)), os.path.basename(args.out), record)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
