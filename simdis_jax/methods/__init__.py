"""The training methods, one module each, found by config.method (the interface: methods/interface.py)."""

from types import ModuleType

from simdis_jax.methods import moco_v2, seed, simdis, supervised

_MODULES = {name: module for module in (simdis, supervised, moco_v2, seed) for name in module.METHODS}
# Every config.method value, in the order the study lists them.
METHODS = tuple(_MODULES)


def get(method_name: str) -> ModuleType:
  """The module that implements `method_name` (a config.method value)."""
  if method_name not in _MODULES:
    raise ValueError(f"Unknown method {method_name!r}; choose one of {METHODS}.")
  return _MODULES[method_name]
