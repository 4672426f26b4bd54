"""Where the step's time goes: its parts (augmentation, each network's passes) timed alone on the mesh."""

import functools
import statistics
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P

from simdis_jax import configuration, parallel
from simdis_jax import step as step_lib
from simdis_jax.data import augment
from simdis_jax.tools.benchmark.timing import build_step, synthetic_batch, time_calls


def breakdown(config: ml_collections.ConfigDict, repeats: int = 5, devices=None) -> Dict[str, float]:
  """Median seconds of the step's parts run alone on the mesh: augmentation, each network's passes, optimizer."""
  config = configuration.validate(config)
  mesh = parallel.make_mesh(devices)
  networks, state, _ = build_step(config, mesh)
  images, _ = synthetic_batch(config, mesh)
  key = jax.random.PRNGKey(0)
  if images.ndim == 5:  # host crops (streamed datasets)
    two_views = jax.jit(lambda k, x: augment.two_views_of_crops(k, x, config.data.augment))
  else:
    two_views = jax.jit(lambda k, x: augment.two_views(k, x, config.data.augment, out_size=config.data.image_size))
  v1, v2 = two_views(key, images)
  parts = {"augment_two_views": lambda: two_views(key, images)}
  axis = parallel.DATA_AXIS if config.model.sync_bn else None
  spec = (P(), P(parallel.DATA_AXIS), P(parallel.DATA_AXIS))

  def per_device(fn):
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=P(), check_vma=False))

  nets = {
    "student": (networks.student, state.student.params, state.student.batch_stats),
    "student_ema": (networks.student_ema, state.student.ema_params, state.student.ema_batch_stats),
  }
  if networks.teacher is not None:
    nets["teacher"] = (networks.teacher, state.teacher.params, state.teacher.batch_stats)
    nets["teacher_ema"] = (networks.teacher_ema, state.teacher.ema_params, state.teacher.ema_batch_stats)
  for name, (net, params, stats) in nets.items():

    def forward(p, a, b, net=net, stats=stats):
      (out1, out2), _ = step_lib.forward_views(net, p, stats, (a, b), bn="train", update_stats=True, axis=axis)
      return jnp.sum(out1["projection"]) + jnp.sum(out2["projection"])

    fwd = per_device(forward)
    parts[f"{name}_forward_2views"] = functools.partial(fwd, params, v1, v2)
    if not name.endswith("_ema"):
      grad = per_device(lambda p, a, b, forward=forward: jax.lax.pmean(jax.grad(forward)(p, a, b), parallel.DATA_AXIS))
      parts[f"{name}_forward_backward_2views"] = functools.partial(grad, params, v1, v2)
  results = {}
  for name, fn in parts.items():
    jax.block_until_ready(fn())
    results[name] = statistics.median(time_calls(fn, repeats))
  return results
