"""Counting a network's multiply-adds and FLOPs per image, and Table 1's forward-cost arithmetic.

XLA counts a multiply-add as 2 FLOPs and skips the taps that fall on a
convolution's zero padding; the paper's "4.1 G FLOPs" of a ResNet-50 are
multiply-adds over every kernel tap (`count_macs`), so both are given.
"""

from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np

from simdis_jax.flops import flops_of
from simdis_jax.models.network import network_from_config

# The paper's Table 1: forward multiply-adds per 224-px image, and its cost formulas (× M × N).
PAPER_TEACHER_GMACS = 4.1
PAPER_STUDENT_GMACS = 1.8
PAPER_MULTIVIEW_GMACS = 0.012
PAPER_TABLE1 = {  # method: (target views, G forward MACs per image per epoch, formula)
    "SimDis-Off": (2, 2 * PAPER_TEACHER_GMACS + PAPER_STUDENT_GMACS, "(8.2G + 1.8G) x M x N"),
    "SimDis-On": (2, PAPER_TEACHER_GMACS + PAPER_STUDENT_GMACS, "(4.1G + 1.8G) x M x N"),
    "SimDis-On-7v": (7, PAPER_TEACHER_GMACS + PAPER_STUDENT_GMACS + PAPER_MULTIVIEW_GMACS,
                     "(4.1G + 1.8G + 12M) x M x N"),
}


def forward_flops(model_config, image_size: int, channels: int = 3, dtype=jnp.float32) -> Dict[str, float]:
  """Forward FLOPs (XLA) and MACs (every kernel tap) of one image through the encoder, projector and one predictor."""
  net = network_from_config(model_config, heads=("sema_dv",), dtype=dtype)
  x = jnp.zeros((1, image_size, image_size, channels), jnp.float32)
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), x, train=False))
  no_heads = {"params": {k: v for k, v in variables["params"].items() if not k.startswith("predictor")},
              "batch_stats": {k: v for k, v in variables["batch_stats"].items() if not k.startswith("predictor")}}
  encoder = jax.jit(lambda v, x: net.apply(v, x, train=False, features_only=True))
  projected = jax.jit(lambda v, x: net.clone(heads=()).apply(v, x, train=False))
  whole = jax.jit(lambda v, x: net.apply(v, x, train=False))
  counts = {}
  for name, fn, v in (("encoder", encoder, variables), ("projected", projected, no_heads), ("whole", whole, variables)):
    # Before optimisation (see simdis_jax/flops.py); where the backend cannot count that, on the CPU.
    lowered = flops_of(fn.lower(v, x))
    if not np.isfinite(lowered):
      on_cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
      v_cpu, x_cpu = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_cpu), (v, x))
      lowered = flops_of(fn.lower(v_cpu, x_cpu))
    counts[name] = (lowered, count_macs(fn, v, x))
  return {"encoder_flops": counts["encoder"][0], "encoder_macs": counts["encoder"][1],
          "projector_macs": counts["projected"][1] - counts["encoder"][1],
          "predictor_macs": counts["whole"][1] - counts["projected"][1]}


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
    for v in (value if isinstance(value, (list, tuple)) else (value,)):
      if hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
        yield v.jaxpr
      elif hasattr(v, "eqns"):
        yield v


def predicted_train_gflops(teacher_gmacs: float, student_gmacs: float, predictor_gmacs: float) -> Dict[str, float]:
  """Table 1's forward costs turned into training FLOPs per image: backward = 2x forward, 2 views, 2 FLOPs/MAC.

  A trained network costs 3 forwards per view, a target (EMA or frozen) network 1.
  """
  t, s = teacher_gmacs, student_gmacs
  byol_teacher = 2 * 2 * (3 * t + t)
  online = 2 * 2 * (3 * t + t + 3 * s + s)
  offline_step = 2 * 2 * (t + 3 * s + s)  # frozen teacher EMA forward + the student's BYOL pair
  return {"SimDis-Off": byol_teacher + offline_step, "SimDis-On": online,
          "SimDis-On-7v": online + 2 * 2 * 3 * 6 * predictor_gmacs, "offline step": offline_step}
