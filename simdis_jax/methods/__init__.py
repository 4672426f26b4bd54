"""The training methods, one module each, found by config.method (the interface: methods/interface.py).

The registry names each method's module; `get` imports it when it is first asked for, so that the
schema (configuration.py) lists the methods without importing JAX.
"""

import importlib
from types import ModuleType

# config.method -> its module in methods/ (whose METHODS names it), in the order the study lists them.
_MODULES = {"byol": "simdis", "simdis_off": "simdis", "simdis_on": "simdis", "supervised": "supervised",
            "moco_v2": "moco_v2", "seed": "seed"}
# Every config.method value, in the order the study lists them.
METHODS = tuple(_MODULES)


def get(method_name: str) -> ModuleType:
  """The module that implements `method_name` (a config.method value)."""
  if method_name not in _MODULES:
    raise ValueError(f"Unknown method {method_name!r}; choose one of {METHODS}.")
  return importlib.import_module(f"simdis_jax.methods.{_MODULES[method_name]}")
