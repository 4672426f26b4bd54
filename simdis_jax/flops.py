"""The one counter of a train step's FLOPs: XLA's cost analysis, with a CPU fallback where the device gives none.

Training records it in `run_info.json`; the benchmark divides it by the step
time. It counts the step's HLO before optimisation (one device's program under
SPMD), for two reasons: a compiled GPU program hands its convolutions and
matmuls to cuDNN/cuBLAS custom calls that XLA's cost analysis does not count
(1.77 G per image instead of ~91 G for SimDis-On-7v at 224 px on an H200), and
the GPU backend gives no cost analysis of an unoptimised program at all. There
the same step is lowered for the host CPU on abstract arguments of one device's
share of the batch: nothing runs, and FLOPs do not depend on the backend.

Also here: one network's forward cost per image (`forward_flops`), in XLA's FLOPs and in multiply-adds
counted as the paper's tools count them (`count_macs`: every kernel tap, XLA skips the taps that fall
on a convolution's zero padding, so the paper's "4.1 G FLOPs" of a ResNet-50 are `count_macs`'s).
"""

from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from simdis_jax import parallel, runs
from simdis_jax.models.network import compute_dtype, network_from_config
from simdis_jax.step import make_train_step


def flops_of(program) -> float:
  """FLOPs of one call of a lowered or compiled program (XLA's cost analysis); nan where the backend gives none."""
  analysis = program.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per program
    analysis = analysis[0] if analysis else None
  if not analysis:  # None: no cost analysis for this program on this backend (unoptimised HLO on GPU)
    return float("nan")
  return float(analysis.get("flops", float("nan")))


def build_step(config, mesh, conv_impl: Optional[str] = None, total_steps: int = 1000) -> Callable:
  """The jitted train step of `config` on `mesh`, with its convolutions computed as `conv_impl` if given.

  The LR and EMA schedules' values do not change the step's FLOPs, so any
  plausible `total_steps` counts the same.
  """
  if conv_impl is not None:
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.conv_impl = conv_impl
  parts = runs.build(config, total_steps, total_steps // 10)
  return make_train_step(config, parts.networks, parts.tx, parts.schedule, total_steps, mesh)


def step_flops(
  config, mesh, state, images, labels, train_step: Optional[Callable] = None, conv_impl: Optional[str] = None
) -> Optional[float]:
  """One device's FLOPs of one train step of `config` (lowered, not compiled), counted on the CPU where need be.

  `train_step` is the step the caller already built (saves a trace; used when
  `conv_impl` is None); `conv_impl` counts the step as if its convolutions were
  computed that way. None for a `train_step` that is not a jitted function (a
  wrapper, as tests use).
  """
  if train_step is not None and conv_impl is None:
    if not hasattr(train_step, "lower"):
      return None
  else:
    train_step = build_step(config, mesh, conv_impl)
  flops = flops_of(train_step.lower(state, images, labels))
  if flops != flops:  # nan: the backend cannot count the unoptimised program (GPU)
    flops = cpu_step_flops(config, mesh.devices.size, state, images, labels, conv_impl)
  return flops


def cpu_step_flops(config, num_devices: int, state, images, labels, conv_impl: Optional[str] = None) -> float:
  """One device's FLOPs of the step, lowered for the host CPU on abstract arguments of one device's share of the batch.

  The compute dtype is pinned to what the config resolves to on its own
  devices ("auto" is bfloat16 on a GPU, float32 on the CPU).
  """
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.compute_dtype = jnp.dtype(compute_dtype(config)).name
  local = images.shape[0] // num_devices
  config.train.batch_size = local
  cpu_mesh = parallel.make_mesh(jax.devices("cpu")[:1])
  abstract = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
  per_device = lambda x: jax.ShapeDtypeStruct((local,) + x.shape[1:], x.dtype)  # noqa: E731
  step = build_step(config, cpu_mesh, conv_impl)
  return flops_of(step.lower(jax.tree.map(abstract, state), per_device(images), per_device(labels)))


def forward_flops(model_config, image_size: int, channels: int = 3, dtype=jnp.float32) -> Dict[str, float]:
  """Forward FLOPs (XLA) and MACs (every kernel tap) of one image through the encoder, projector and one predictor."""
  net = network_from_config(model_config, heads=("sema_dv",), dtype=dtype)
  x = jnp.zeros((1, image_size, image_size, channels), jnp.float32)
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), x, train=False))
  no_heads = {
    "params": {k: v for k, v in variables["params"].items() if not k.startswith("predictor")},
    "batch_stats": {k: v for k, v in variables["batch_stats"].items() if not k.startswith("predictor")},
  }
  encoder = jax.jit(lambda v, x: net.apply(v, x, train=False, features_only=True))
  projected = jax.jit(lambda v, x: net.clone(heads=()).apply(v, x, train=False))
  whole = jax.jit(lambda v, x: net.apply(v, x, train=False))
  counts = {}
  for name, fn, v in (("encoder", encoder, variables), ("projected", projected, no_heads), ("whole", whole, variables)):
    # Before optimisation (as the step's count); where the backend cannot count that, on the CPU.
    lowered = flops_of(fn.lower(v, x))
    if not np.isfinite(lowered):
      on_cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
      v_cpu, x_cpu = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_cpu), (v, x))
      lowered = flops_of(fn.lower(v_cpu, x_cpu))
    counts[name] = (lowered, count_macs(fn, v, x))
  return {
    "encoder_flops": counts["encoder"][0],
    "encoder_macs": counts["encoder"][1],
    "projector_macs": counts["projected"][1] - counts["encoder"][1],
    "predictor_macs": counts["whole"][1] - counts["projected"][1],
  }


def count_macs(fn: Callable, *args) -> int:
  """Multiply-adds of fn(*args) counted as the paper's tools count them: every kernel tap at every output.

  XLA's cost analysis skips the taps that fall on a convolution's zero padding,
  which lowers a ResNet-18's count by ~6% at 224 px; this count includes them.
  """

  def walk(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
      name = eqn.primitive.name
      if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval
        out = eqn.outvars[0].aval
        dn = eqn.params["dimension_numbers"]
        kernel_in = rhs.shape[dn.rhs_spec[1]]
        kernel_spatial = int(np.prod([rhs.shape[d] for d in dn.rhs_spec[2:]]))
        total += int(np.prod(out.shape)) * kernel_spatial * kernel_in
      elif name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval
        total += int(np.prod(eqn.outvars[0].aval.shape)) * int(np.prod([lhs.shape[d] for d in lhs_contract]))
      for sub in _sub_jaxprs(eqn):
        total += walk(sub)
    return total

  return walk(jax.make_jaxpr(fn)(*args).jaxpr)


def _sub_jaxprs(eqn):
  """The jaxprs nested in an equation's parameters (pjit, custom_jvp, remat, ...)."""
  for value in eqn.params.values():
    for v in value if isinstance(value, (list, tuple)) else (value,):
      if hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
        yield v.jaxpr
      elif hasattr(v, "eqns"):
        yield v
