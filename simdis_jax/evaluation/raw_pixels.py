"""The raw-pixel references: the kNN and the linear classifier that every network is measured by, on pixels.

    python -m simdis_jax.evaluation.raw_pixels --holdout validation --out raw_pixels_validation.json

A network's features must beat its own input to have learnt anything. The features here
are the images as the networks receive them in eval mode (scaled to [0, 1], then
normalised by the dataset's mean and std), flattened: 784 values for Fashion-MNIST.
They go through the same weighted cosine kNN (k, temperature) and the same fast linear
evaluation (configs/fashion_mnist/linear_eval.py's protocol on cached features) as an
encoder's pooled features, on the split `--holdout` names (docs/input.md). Its figures are the
references of data/datasets.py (archived in results/fashion_mnist_v3/references/).
"""

import json
import os
import sys
from typing import Dict

import numpy as np

from simdis_jax import configuration, config_files
from simdis_jax import workdir as workdir_files
from simdis_jax.data import input as data_input
from simdis_jax.evaluation import classifier
from simdis_jax.evaluation.knn import knn_classify

LINEAR_CONFIG = "configs/fashion_mnist/linear_eval.py"


def pixel_features(images: np.ndarray, mean, std) -> np.ndarray:
  """uint8 images [N, H, W, C] -> float32 [N, H·W·C]: scaled to [0, 1], normalised per channel, flattened."""
  x = images.astype(np.float32) / 255.0
  x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
  return x.reshape(x.shape[0], -1)


def references(
  holdout: str = "validation", k: int = 20, temperature: float = 0.07, protocol: str = "deepmind"
) -> Dict[str, float]:
  """kNN and linear top-1 (%) of raw pixels on Fashion-MNIST's split `holdout` (none | validation | test)."""
  data = configuration.data_config("fashion_mnist")
  data.holdout = holdout
  data.augment = configuration.fashion_mnist_augment()
  dataset = data_input.load_dataset(data)
  mean, std = data.augment.mean, data.augment.std
  bank, queries = (pixel_features(dataset.split(s)[0], mean, std) for s in ("train", "eval"))
  bank_y, query_y = dataset.split("train")[1], dataset.split("eval")[1]
  pred, _ = knn_classify(bank, bank_y, queries, k, temperature, dataset.num_classes)
  linear_config = config_files.load_config(f"{LINEAR_CONFIG}:{protocol},fast")
  model, state = classifier.train_on_features(linear_config, bank, bank_y, dataset.num_classes)
  linear = classifier.evaluate_features(model, state, queries, query_y)
  return {
    "holdout": holdout,
    "train_examples": int(bank.shape[0]),
    "eval_examples": int(queries.shape[0]),
    f"knn_top1/k{k}": round(float(100.0 * np.mean(pred == query_y)), 4),
    "knn_temperature": temperature,
    "linear_top1": round(linear["top1"], 4),
    "linear_top5": round(linear["top5"], 4),
    "linear_protocol": f"{protocol},fast",
    "linear_epochs": float(linear_config.train.epochs),
  }


def main(argv=None) -> int:
  """python -m simdis_jax.evaluation.raw_pixels [--holdout validation] [--out FILE]: prints the JSON."""
  import argparse  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(description="kNN and linear top-1 of raw pixels (Fashion-MNIST).")
  parser.add_argument(
    "--holdout",
    default="validation",
    choices=("none", "validation", "test"),
    help="the split: validation = the 50k/10k split's 10k; test = the test set (docs/input.md)",
  )
  parser.add_argument("--k", type=int, default=20)
  parser.add_argument("--temperature", type=float, default=0.07)
  parser.add_argument("--protocol", default="deepmind", choices=("deepmind", "authors"))
  parser.add_argument("--out", default="", help="also write the JSON to this file")
  args = parser.parse_args(argv)
  record = references(args.holdout, args.k, args.temperature, args.protocol)
  record["command"] = "python -m simdis_jax.evaluation.raw_pixels " + " ".join(sys.argv[1:] if argv is None else argv)
  print(json.dumps(record))
  if args.out:
    workdir_files.write_json(os.path.dirname(os.path.abspath(args.out)), os.path.basename(args.out), record, indent=2)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
