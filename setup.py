"""simdis_jax: SimDis self-supervised distillation (BYOL teacher -> small student) in JAX/Flax."""

import os

from setuptools import find_packages, setup

# Console scripts: command -> module:function (tests/test_cli.py runs each one's --help).
CONSOLE_SCRIPTS = {
  "simdis-train": "simdis_jax.main:run",  # pretraining (and its final evaluation)
  "simdis-linear": "simdis_jax.main:run_linear",  # linear evaluation of a pretraining run
  "simdis-knn": "simdis_jax.evaluation.knn:run",  # kNN top-1 of a checkpoint's encoder
  "simdis-export": "simdis_jax.export:run",  # SavedModel / TFLite / npz
  "simdis-import": "simdis_jax.import_weights:run",  # a published ResNet as a finished run
  "simdis-report": "simdis_jax.report:run",  # table, curves, embedding maps
  "simdis-study": "simdis_jax.study:run",  # presets x seeds, then the study's report
  "simdis-benchmark": "simdis_jax.benchmark:run",  # step timing, FLOPs, Table 1
  "simdis-zoo": "simdis_jax.zoo.__main__:main",  # the model zoo: finished networks by name
}


def zoo_files():
  """The zoo's manifest and every file of its shipped runs (checkpoint files have no extension to glob)."""
  root = os.path.join("simdis_jax", "zoo")
  found = ["manifest.json"]
  for folder, _, files in os.walk(os.path.join(root, "models")):
    found += [os.path.relpath(os.path.join(folder, f), root) for f in files]
  return found


setup(
  name="simdis_jax",
  version="0.1.0",
  description="SimDis: simple distillation baselines for small self-supervised models, in JAX/Flax.",
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  packages=find_packages(include=["simdis_jax", "simdis_jax.*"]),
  package_data={"simdis_jax.zoo": zoo_files()},
  python_requires=">=3.10",
  install_requires=[
    "jax>=0.7.0",
    "flax>=0.11.0",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11.0",
    "clu>=0.0.12",
    "ml_collections>=1.0.0",
    "tensorflow-cpu>=2.18",
    "tensorflow-datasets>=4.9.7",
    # clu's TensorBoard writer and tfds need these, but do not always declare them.
    "tensorboard>=2.18",
    "importlib_resources>=6.0",
    "etils[epath]>=1.7",
    "absl-py>=2.0",
    "numpy>=1.26",
    "scipy>=1.11",  # the study report's t-tests (jax depends on it too)
    "matplotlib>=3.8",
    "scikit-learn>=1.3",  # the report's embedding maps (t-SNE)
  ],
  # One command per tool, all with absl flags and --help; `python -m simdis_jax.<module>` runs the same code.
  entry_points={"console_scripts": [f"{name}={target}" for name, target in CONSOLE_SCRIPTS.items()]},
  # torch only writes real .pth files and gives the reference forward in the import tests; 2.13.0 is the
  # CPU build that pip finds on this project's machines (a newer release would pull a CUDA build of GBs).
  # dm-haiku builds the reference forward of DeepMind's BYOL networks in the import tests (0.0.17 runs on
  # this jax; it installs no other version of anything already here). ruff lints the repository in the suite
  # and checks its formatting (tests/test_lint.py; the rules and format settings are in ruff.toml); its
  # formatter's style changes only between minor releases, so the minor version is held.
  extras_require={
    "test": ["pytest>=8.0", "pytest-xdist>=3.5", "torch==2.13.0", "dm-haiku==0.0.17", "ruff>=0.17,<0.18"]
  },
)
