"""The one train state: teacher and student, online and EMA, BN statistics, optimizer, step and RNG."""

import dataclasses
from typing import Any, NamedTuple, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from simdis_jax import methods
from simdis_jax.models import depthwise
from simdis_jax.models.network import compute_dtype, conv_impl, network_from_config


@flax.struct.dataclass
class NetState:
  """One siamese pair: online params/BN statistics and its EMA copy (encoder + projector)."""

  params: Any
  batch_stats: Any
  ema_params: Any
  ema_batch_stats: Any


@dataclasses.dataclass(frozen=True)
class TrainState:
  """Everything a run needs to continue, saved and restored as one pytree."""

  step: jnp.ndarray  # int32 scalar: number of completed train steps
  rng: jnp.ndarray  # raw uint32[2] key; step k uses fold_in(rng, k)
  student: NetState
  teacher: Optional[NetState]  # None for BYOL runs
  opt_state: Any  # one optimizer over trainable_params(state)
  probe: Any = None  # online linear probe {network: {kernel, bias}} or None
  probe_opt_state: Any = None
  # The method's extra state (methods/interface.py init_method_state), e.g. MoCo-v2's / SEED's
  # {"queue": float32 [K, dim] rows, "ptr": int32 scalar}; None for methods without one.
  method_state: Any = None

  def replace(self, **updates) -> "TrainState":
    """A copy with `updates` (as flax.struct dataclasses offer)."""
    return dataclasses.replace(self, **updates)

  def as_written(self, written) -> Tuple[Any, Any]:
    """(this state as a checkpoint whose top-level names are `written` holds it, a function back to a TrainState).

    Checkpoints written before a field was renamed (FORMER_FIELD_NAMES: method_state was MoCo-v2's and SEED's
    `queue`) hold it under the former name: the state is restored as a dict of its fields under the names
    written, then rebuilt. Otherwise (self, identity).
    """
    fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    renamed = {
      new: old
      for new, old in FORMER_FIELD_NAMES.items()
      if fields[new] is not None and new not in written and old in written
    }
    if not renamed:
      return self, lambda state: state
    tree = {renamed.get(name, name): value for name, value in fields.items()}  # None fields: empty nodes, as written
    return tree, lambda restored: TrainState(**{n: restored.get(renamed.get(n, n)) for n in fields})

  @property
  def queue(self) -> Any:
    """The former name of method_state (MoCo-v2's and SEED's queue), for reading."""
    return self.method_state


_TRAIN_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(TrainState))
# Checkpoints written before the per-method field hold it under its former name ({field: former name});
# TrainState.as_written restores them into today's state.
FORMER_FIELD_NAMES = {"method_state": "queue"}


def _train_state_children(s: TrainState):
  # A None method_state is left out of the tree (not kept as an empty node): the tree of a method without one
  # is then exactly what it was before the field existed, so their older checkpoints still restore.
  names = tuple(n for n in _TRAIN_STATE_FIELDS if n != "method_state" or s.method_state is not None)
  return [(jax.tree_util.GetAttrKey(n), getattr(s, n)) for n in names], names


def _train_state_flatten(s: TrainState):
  children, names = _train_state_children(s)
  return [value for _, value in children], names


jax.tree_util.register_pytree_with_keys(
  TrainState,
  _train_state_children,
  lambda names, children: TrainState(**dict(zip(names, children))),
  _train_state_flatten,
)


class Networks(NamedTuple):
  """The flax modules of a run (stateless; parameters live in TrainState)."""

  student: nn.Module
  student_ema: nn.Module
  teacher: Optional[nn.Module]
  teacher_ema: Optional[nn.Module]


def build_networks(config, dtype=None) -> Networks:
  """The method's online networks with their heads, each with an EMA partner without heads.

  `dtype` overrides the compute dtype (a float64 research step); by default it is config.model's.
  """
  # Params stay float32 whatever the compute dtype; conv_impl does not change them either.
  dtype = compute_dtype(config) if dtype is None else dtype
  nets = {}
  for name, online_kwargs in methods.get(config.method).online_networks(config).items():
    if probe_in_loss(config) and name in trainable_networks(config):
      online_kwargs = {**online_kwargs, "probe_classes": config.probe.num_classes}
    model_config = config.model[name]
    impl = conv_impl(config, model_config)
    # EMA nets have no heads, so their parameters are exactly the online encoder + projector subtree
    # (a method's own projector module included).
    ema_kwargs = methods.shared_heads(config, name)
    for network, kwargs in ((name, online_kwargs), (f"{name}_ema", ema_kwargs)):
      nets[network] = network_from_config(
        model_config,
        dtype=dtype,
        conv_impl=impl,
        bn_running_var=config.model.get("bn_running_var", "biased"),
        matmul_conv_vjp=config.model.get("matmul_conv_vjp", True),
        matmul_max_pool=config.model.get("matmul_max_pool", True),
        data_norm=(config.data.augment.mean, config.data.augment.std),
        depthwise_impl=depthwise.from_config(config),
        **kwargs,
      )
  return Networks(*(nets.get(field) for field in Networks._fields))


def probe_in_loss(config) -> bool:
  """config.probe.optimizer="main": DeepMind's online classifier, a module of each trainable network whose
  cross-entropy joins the loss and whose parameters the main optimizer trains (else the probe's own SGD)."""
  return bool(config.probe.enabled) and config.probe.get("optimizer", "own") == "main"


def trainable_networks(config) -> Tuple[str, ...]:
  """The online networks the optimizer updates: those the method runs as trainable (SimDis-On: both)."""
  return tuple(f.network for f in methods.get(config.method).forwards(config) if f.trainable)


def trainable_params(state: TrainState, config):
  """The parameters the optimizer updates, {online network: params}."""
  return {name: getattr(state, name).params for name in trainable_networks(config)}


def network_variables(state: TrainState, network: str):
  """(params, batch_stats) of a network of state.Networks: an online one's, or its pair's EMA copy."""
  pair = getattr(state, network[: -len("_ema")] if network.endswith("_ema") else network)
  if network.endswith("_ema"):
    return pair.ema_params, pair.ema_batch_stats
  return pair.params, pair.batch_stats


def with_updates(state: TrainState, params, batch_stats) -> TrainState:
  """The state with new params {online network: params} and BN statistics {network: batch_stats}."""
  for name in ("student", "teacher"):
    pair = getattr(state, name)
    if pair is None:
      continue
    if name in params:
      pair = pair.replace(params=params[name])
    if name in batch_stats:
      pair = pair.replace(batch_stats=batch_stats[name])
    if f"{name}_ema" in batch_stats:
      pair = pair.replace(ema_batch_stats=batch_stats[f"{name}_ema"])
    state = state.replace(**{name: pair})
  return state


def init_net_state(online: nn.Module, ema: nn.Module, rng, sample: jnp.ndarray, ema_init: str) -> NetState:
  """Initialises a network and its EMA: an exact copy (authors) or a separate init (DeepMind)."""
  online_rng, ema_rng = jax.random.split(rng)
  variables = online.init(online_rng, sample, train=False)
  ema_variables = ema.init(ema_rng, sample, train=False)
  if ema_init == "copy":
    ema_params = {k: variables["params"][k] for k in ema_variables["params"]}
  else:
    ema_params = ema_variables["params"]
  # EMA BN statistics are the EMA net's own from the start (docs/spec.md "EMA").
  return NetState(variables["params"], variables["batch_stats"], ema_params, ema_variables["batch_stats"])


def probe_networks(networks: Networks):
  """Networks whose features the online probe classifies: the student, and the teacher if present."""
  return ("student",) + (("teacher",) if networks.teacher is not None else ())


def init_probe(config, networks: Networks, image_shape):
  """Zero-initialised linear classifiers on each probed network's pooled features."""
  sample = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  probe = {}
  for name in probe_networks(networks):
    net = getattr(networks, name)
    dim = jax.eval_shape(
      lambda n=net: n.init_with_output(jax.random.PRNGKey(0), sample, train=False, features_only=True)[0]["feature"]
    ).shape[-1]
    probe[name] = {
      "kernel": jnp.zeros((dim, config.probe.num_classes), jnp.float32),
      "bias": jnp.zeros((config.probe.num_classes,), jnp.float32),
    }
  return probe


def create_train_state(config, networks: Networks, tx, image_shape) -> TrainState:
  """A fresh state from config.seed (pure; jit it with out_shardings to create it sharded)."""
  rng = jax.random.PRNGKey(config.seed)
  student_rng, teacher_rng, data_rng = jax.random.split(rng, 3)
  sample = jnp.zeros((2,) + tuple(image_shape), jnp.float32)
  student = init_net_state(networks.student, networks.student_ema, student_rng, sample, config.model.ema_init)
  teacher = None
  if networks.teacher is not None:
    teacher = init_net_state(networks.teacher, networks.teacher_ema, teacher_rng, sample, config.model.ema_init)
  state = TrainState(jnp.zeros([], jnp.int32), data_rng, student, teacher, None)
  state = state.replace(opt_state=tx.init(trainable_params(state, config)))
  if config.probe.enabled and not probe_in_loss(config):
    probe = init_probe(config, networks, image_shape)
    state = state.replace(probe=probe, probe_opt_state=probe_optimizer(config).init(probe))
  # Its own stream (fold_in of the seed's key), so that the other draws stay those of every method.
  return state.replace(method_state=methods.init_method_state(config, jax.random.fold_in(rng, 17)))


def probe_optimizer(config) -> optax.GradientTransformation:
  """The online probe's own optimizer; it never touches the representation's parameters."""
  return optax.sgd(config.probe.learning_rate, momentum=0.9, nesterov=True)
