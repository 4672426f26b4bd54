"""The tests' tiny config for command-line runs: `--config tests/tiny_cli_config.py[:<method>,<views>]`.

Multi-process and fault tests start real `python -m simdis_jax.main` processes;
this gives them (and the in-process runs they are compared with) one
seconds-per-step config: `conftest.tiny_config` for 8 steps, a checkpoint
and a metrics line after every step.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import tiny_config  # noqa: E402  pylint: disable=wrong-import-position

STEPS = 8


def get_config(arg="simdis_on,simdis_2v"):
  """The tiny config of `method,views` (a VIEW_PRESETS name)."""
  method, views = arg.split(",")
  c = tiny_config(method, views)
  c.knn.networks = ()
  c.train.steps = STEPS
  c.train.log_every_steps = 1
  c.train.checkpoint_every_steps = 1
  c.train.keep_checkpoints = STEPS
  return c
