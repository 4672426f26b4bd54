"""Weighted cosine kNN on frozen features (the InstDisc/DINO monitor).

Each query takes its k most cosine-similar memory-bank examples; neighbour i
votes for its class with weight exp(sim_i / T); the class with the largest
summed vote wins.
"""

import functools
import os
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from simdis_jax import parallel, runs, zoo
from simdis_jax import workdir as workdir_files
from simdis_jax.data import input as data_input
from simdis_jax.evaluation import features
from simdis_jax.methods.common import l2_normalize


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def knn_scores(
  bank: jnp.ndarray, bank_labels: jnp.ndarray, queries: jnp.ndarray, k: int, temperature: float, num_classes: int
) -> jnp.ndarray:
  """Class scores [Q, C] of each query from its k nearest (cosine) bank examples."""
  sims = l2_normalize(queries) @ l2_normalize(bank).T
  top_sims, top_idx = jax.lax.top_k(sims, k)
  weights = jnp.exp(top_sims / temperature)
  votes = jax.nn.one_hot(bank_labels[top_idx], num_classes) * weights[..., None]
  return jnp.sum(votes, axis=1)


def knn_classify(
  bank: np.ndarray,
  bank_labels: np.ndarray,
  queries: np.ndarray,
  k: int = 20,
  temperature: float = 0.07,
  num_classes: int = 0,
  chunk: int = 1024,
) -> Tuple[np.ndarray, np.ndarray]:
  """Returns (top-1 predictions [Q], class scores [Q, C]); k larger than the bank is an error."""
  if k > bank.shape[0]:
    raise ValueError(
      f"kNN with k={k} needs at least k memory-bank examples, but the bank holds "
      f"{bank.shape[0]}; lower config.knn.k or raise config.knn.train_examples."
    )
  num_classes = num_classes or int(bank_labels.max()) + 1
  scores = [
    np.asarray(knn_scores(bank, bank_labels, queries[i : i + chunk], k, temperature, num_classes))
    for i in range(0, queries.shape[0], chunk)
  ]
  scores = np.concatenate(scores)
  return scores.argmax(-1), scores


def bank_and_queries(
  network,
  variables,
  dataset,
  aug_config,
  image_size: int,
  mesh,
  train_examples: int,
  eval_examples: int,
  batch_size: int,
  seed: int = 0,
):
  """Encoder features and labels of the memory bank (train split) and the queries (held-out split)."""
  fn = functools.partial(
    features.make_feature_fn(network, dataset.device_augment_config(aug_config), image_size, mesh), variables
  )
  return (
    features.extract_features(fn, dataset.eval_batches("train", train_examples, batch_size, mesh, seed)),
    features.extract_features(fn, dataset.eval_batches("eval", eval_examples, batch_size, mesh, seed)),
  )


def knn_accuracy(
  network, variables, dataset, knn_config, aug_config, image_size: int, mesh, seed: int = 0
) -> Dict[str, float]:
  """Top-1 kNN accuracy (%) of a network's encoder: train split as the bank, held-out split as queries."""
  (bank, bank_y), (queries, query_y) = bank_and_queries(
    network,
    variables,
    dataset,
    aug_config,
    image_size,
    mesh,
    knn_config.train_examples,
    knn_config.eval_examples,
    knn_config.batch_size,
    seed,
  )
  pred, _ = knn_classify(bank, bank_y, queries, knn_config.k, knn_config.temperature, dataset.num_classes)
  return {"knn_top1": float(100.0 * np.mean(pred == query_y))}


def evaluate_checkpoint(
  workdir: str,
  network: str = "student",
  weights: str = "online",
  ks: Optional[Sequence[int]] = None,
  temperature: Optional[float] = None,
  step: Optional[int] = None,
  train_examples: Optional[int] = None,
  eval_examples: Optional[int] = None,
  holdout: Optional[str] = None,
) -> Dict[str, Any]:
  """Standalone kNN top-1 (for each k) of one encoder of any pretraining checkpoint.

  Settings left None are the run's own config.knn values (k, temperature, the memory-bank and query
  subsets), drawn with the run's seed: by default the result is the one training logged at that step.
  `train_examples` / `eval_examples` = 0 use the whole split.
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
  own = run_config.knn
  ks = tuple(ks) if ks else (own.k,)
  temperature = own.temperature if temperature is None else temperature
  train_examples = own.train_examples if train_examples is None else train_examples
  eval_examples = own.eval_examples if eval_examples is None else eval_examples
  dataset = data_input.load_dataset(run_config.data)
  (bank, bank_y), (queries, query_y) = bank_and_queries(
    net,
    features.encoder_variables(net_state, weights),
    dataset,
    run_config.data.augment,
    run_config.data.image_size,
    mesh,
    train_examples,
    eval_examples,
    own.batch_size,
    run_config.seed,
  )
  results: Dict[str, Any] = {"step": int(state.step)}
  for k in ks:
    pred, _ = knn_classify(bank, bank_y, queries, k, temperature, dataset.num_classes)
    results[f"knn_top1/k{k}"] = float(100.0 * np.mean(pred == query_y))
  return results


USAGE = """Weighted cosine kNN top-1 of one encoder of a pretraining checkpoint (console script simdis-knn).

    simdis-knn --workdir workdirs/demo [--network=teacher] [--k=20,200] [--train_examples=0]
    python -m simdis_jax.evaluation.knn ...      (the same command)

Defaults are the run's own config.knn settings (k, temperature, memory-bank subset
knn.train_examples, query subset knn.eval_examples, both drawn with the run's seed), so without
flags it reproduces the kNN top-1 that training logged for the online weights at that step.
--train_examples=0 / --eval_examples=0 use the whole train / held-out split. Prints one JSON line:
the top-1 for each k in %, rounded to two decimals as the training log prints it, and the settings used.
"""


def define_flags(fv) -> None:
  """The standalone kNN's flags, on the FlagValues `fv`."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string(
    "workdir",
    None,
    "A simdis_jax pretraining workdir, or a zoo name (simdis-zoo lists them).",
    flag_values=fv,
    required=True,
  )
  flags.DEFINE_enum("network", "student", ["student", "teacher"], "Which network's encoder.", flag_values=fv)
  flags.DEFINE_enum("weights", "online", ["online", "ema"], "Its online weights or their EMA.", flag_values=fv)
  flags.DEFINE_list("k", None, "Neighbour counts, comma separated (default: the run's knn.k).", flag_values=fv)
  flags.DEFINE_float("temperature", None, "Vote temperature (default: the run's knn.temperature).", flag_values=fv)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=fv)
  flags.DEFINE_integer(
    "train_examples",
    None,
    "Memory-bank subset of the train split, 0 = all (default: the run's knn.train_examples).",
    lower_bound=0,
    flag_values=fv,
  )
  flags.DEFINE_integer(
    "eval_examples",
    None,
    "Query subset of the held-out split, 0 = all (default: the run's knn.eval_examples).",
    lower_bound=0,
    flag_values=fv,
  )
  flags.DEFINE_enum(
    "holdout",
    None,
    ["none", "validation", "test"],
    "Fashion-MNIST's split to evaluate on (docs/input.md; default: the run's config.data.holdout).",
    flag_values=fv,
  )
  flags.DEFINE_string("out", "", "Also write the JSON to this file.", flag_values=fv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line (see USAGE); argv without the program name, default sys.argv[1:]."""
  import json  # pylint: disable=import-outside-toplevel
  import logging  # pylint: disable=import-outside-toplevel
  from simdis_jax import cli  # pylint: disable=import-outside-toplevel

  args = cli.parse(define_flags, argv, USAGE)
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's import-time notices: not this command's output
  try:
    ks = tuple(int(k) for k in args.k) if args.k else None
  except ValueError:
    cli.fail(f"--k={','.join(args.k)}: give whole numbers, comma separated (e.g. --k=20,200).")
  try:
    workdir = zoo.resolve(args.workdir)  # a zoo name: its installed, sha256-checked workdir
    if args.step is not None:  # checked before anything is built: orbax's own error names no steps
      steps = runs.checkpoint_steps(workdir) if os.path.isdir(workdir) else []
      if args.step not in steps:
        print(
          f"knn: {args.workdir} has no checkpoint at step {args.step}; its steps are {steps or 'none'}.",
          file=sys.stderr,
        )
        return 2
    own = workdir_files.read_config(workdir).get("knn", {})
    results = evaluate_checkpoint(
      args.workdir,
      args.network,
      args.weights,
      ks,
      args.temperature,
      args.step,
      args.train_examples,
      args.eval_examples,
      args.holdout,
    )
  except (ValueError, OSError, RuntimeError) as e:  # not a run, a damaged step, a bad run: one line, no traceback
    print(f"knn: {e}", file=sys.stderr)
    return 2
  settings = {
    "k": list(ks or [own.get("k")]),
    "temperature": own.get("temperature") if args.temperature is None else args.temperature,
    "train_examples": own.get("train_examples") if args.train_examples is None else args.train_examples,
    "eval_examples": own.get("eval_examples") if args.eval_examples is None else args.eval_examples,
  }
  # Rounded as the training log and the report print them (a float's full repr, 79.75999999999999, says nothing more).
  rounded = {k: round(v, 2) if k.startswith("knn_top1/") else v for k, v in results.items()}
  record = {
    "workdir": args.workdir,
    "network": args.network,
    "weights": args.weights,
    "holdout": args.holdout,
    **rounded,
    "settings": settings,
  }
  print(json.dumps(record))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    workdir_files.write_json(os.path.dirname(os.path.abspath(args.out)), os.path.basename(args.out), record)
  return 0


def run() -> None:
  """Console script simdis-knn."""
  sys.exit(main())


if __name__ == "__main__":
  run()
