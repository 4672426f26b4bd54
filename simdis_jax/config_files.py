"""Config files (configs/*.py) are not a package: every caller loads one by its path through here."""

import importlib.util
import os


def load_module(path: str):
  """The module of the config file at `path` (executed afresh on each call)."""
  spec = importlib.util.spec_from_file_location(f"simdis_config_{abs(hash(os.path.abspath(path)))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling(config_file: str, name: str):
  """The module of the config file `name` in the folder of `config_file` (a config's own __file__)."""
  return load_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), name))


def load_config(spec: str):
  """get_config() of a config file given as 'path[:arg]', as --config of simdis_jax.main takes it."""
  path, _, arg = spec.partition(":")
  module = load_module(path)
  return module.get_config(arg) if arg else module.get_config()
