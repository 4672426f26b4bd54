"""The training methods, one module each, found by config.method (the interface: methods/interface.py).

The registry is every module of this package that defines ABOUT: adding a method is adding its
module here, nothing else. The rest of the package asks the functions below and names no method.
"""

import importlib
import pkgutil
from types import ModuleType
from typing import Any, Dict, Tuple

from simdis_jax import optim
from simdis_jax.methods.interface import About, TeacherRole


def _discover() -> Dict[str, ModuleType]:
  modules = [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)]
  found = {name: (about, module) for module in modules for name, about in getattr(module, "ABOUT", {}).items()}
  return {name: module for name, (_, module) in sorted(found.items(), key=lambda kv: kv[1][0].order)}


_MODULES = _discover()
# Every config.method value, in the registry's order (About.order).
METHODS = tuple(_MODULES)
# Tables of the one module whose targets are named views (SimDis's): the target-view presets of config.views
# and the views' display names (the objects themselves: the report's tables are that module's).
_VIEWS_MODULE = next((m for m in dict.fromkeys(_MODULES.values()) if hasattr(m, "VIEW_NAMES")), None)
VIEW_PRESETS = getattr(_VIEWS_MODULE, "VIEW_PRESETS", {})
VIEW_NAMES = getattr(_VIEWS_MODULE, "VIEW_NAMES", {})


def get(method_name: str) -> ModuleType:
  """The module that implements `method_name` (a config.method value)."""
  if method_name not in _MODULES:
    raise ValueError(f"Unknown method {method_name!r}; choose one of {METHODS}.")
  return _MODULES[method_name]


def about(method_name: str) -> About:
  """What the package needs to know of a method (label, teacher kind, labels, targets)."""
  return get(method_name).ABOUT[method_name]


def modules() -> Tuple[ModuleType, ...]:
  """Each method module once, in the registry's order."""
  return tuple(dict.fromkeys(_MODULES.values()))


def default_method() -> str:
  """config.method of the base config: the one a module names as DEFAULT_METHOD (the paper's standard setting)."""
  return next(name for name in METHODS if getattr(get(name), "DEFAULT_METHOD", None) == name)


def add_defaults(c) -> None:
  """Adds every method module's config keys and sections, with their defaults, to the base config `c`."""
  for module in modules():
    if hasattr(module, "defaults"):
      module.defaults(c)


def rules() -> Tuple[Dict[str, Any], ...]:
  """Every method module's validation rows (keyword arguments of configuration.Rule)."""
  return tuple(row for module in modules() for row in getattr(module, "RULES", ()))


def validate(config) -> None:
  """The chosen method's cross-key rules (its module's `validate`), if it has any."""
  check = getattr(get(config.method), "validate", None)
  if check is not None:
    check(config)


def teacher_kind(config) -> str:
  """config.method's teacher: none | online | offline (a config or a saved run config, dict-like)."""
  method = config.get("method")
  return about(method).teacher if method in _MODULES else "none"


def describe_targets(config) -> str:
  """What config.method learns from, for tables (config: a run config, dict-like)."""
  method = config.get("method")
  if method not in _MODULES:
    return "—"
  describe = getattr(get(method), "describe_targets", None)
  return describe(config) if describe is not None else about(method).targets


def describe_teacher(config) -> str:
  """What a run's teacher learns from, for tables: its method module's `describe_teacher`, else frozen."""
  describe = getattr(get(config.get("method")), "describe_teacher", None) if config.get("method") in _MODULES else None
  return describe(config) if describe is not None else "— (frozen, restored)"


def shared_heads(config, network: str) -> Dict[str, Any]:
  """The keyword arguments of `network` that its EMA partner and any encoder + projector reader share with it
  (a method's own projector module), from its method's online_networks."""
  kwargs = get(config.method).online_networks(config).get(network, {})
  return {k: v for k, v in kwargs.items() if k == "projector_module"}


def init_method_state(config, rng):
  """The method's extra train state (TrainState.method_state), or None if it has none."""
  init = getattr(get(config.method), "init_method_state", None)
  return None if init is None else init(config, rng)


def make_optimizer(config, schedule):
  """config.method's optimizer: its module's own (`optimizer`), else the one config.optim names."""
  own = getattr(get(config.method), "optimizer", None)
  return own(config, schedule) if own is not None else optim.make_optimizer(config.optim, schedule)


def teacher_methods() -> Tuple[str, ...]:
  """The methods an online SimDis teacher may train by (config.teacher.method): those with a teacher role."""
  return tuple(name for name in METHODS if hasattr(get(name), "teacher_role"))


def teacher_role(config) -> TeacherRole:
  """How config.teacher.method trains an online teacher (its heads, its loss, whether it has an EMA)."""
  return get(config.teacher.method).teacher_role(config)
