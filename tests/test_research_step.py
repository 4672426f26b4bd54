"""The research step: one train step on the caller's views, equal to the train step, float64 end to end."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from simdis_jax import optim, parallel, step as step_lib
from simdis_jax.data import augment
from simdis_jax.state import build_networks, create_train_state

IMAGE_SHAPE = (16, 16, 1)
TOTAL_STEPS = 10


def fresh_state(config):
  """A new float32 train state of `config` (unsharded)."""
  nets = build_networks(config)
  tx = optim.make_optimizer(config.optim, optim.warmup_cosine_schedule(1.0, 256, TOTAL_STEPS, 0))
  return jax.jit(functools.partial(create_train_state, config, nets, tx, IMAGE_SHAPE))()


def online_config():
  c = tiny_config("simdis_on", "simdis_2v")  # student, teacher and both EMAs; two heads + the teacher term
  c.probe.enabled = True
  c.probe.num_classes = 10
  return c


def test_research_step_is_the_train_step_on_the_same_views():
  c = online_config()
  mesh = parallel.make_mesh(jax.devices()[:1])
  nets = build_networks(c)
  sched = optim.warmup_cosine_schedule(c.optim.base_lr, c.train.batch_size, TOTAL_STEPS, 0)
  train_step = step_lib.make_train_step(c, nets, optim.make_optimizer(c.optim, sched), sched, TOTAL_STEPS, mesh)
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
  y = rng.integers(0, 10, (16,), dtype=np.int32)
  state = fresh_state(c)
  # The views the train step draws for step 0.
  v1, v2 = augment.two_views(
    jax.random.fold_in(state.rng, state.step), jnp.asarray(x), c.data.augment, out_size=c.data.image_size
  )
  result = step_lib.research_step(c, state, v1, v2, y, total_steps=TOTAL_STEPS)
  trained, metrics = train_step(
    jax.device_put(state, parallel.replicated(mesh)), parallel.global_batch(x, mesh), parallel.global_batch(y, mesh)
  )
  assert set(result.per_head) == {"sema_dv", "tema_dv"}
  assert float(result.loss) == pytest.approx(float(metrics["loss"]), rel=1e-6)
  assert float(result.loss) == pytest.approx(
    float(result.metrics["loss_student"] + result.metrics["loss_teacher"]), rel=1e-6
  )
  assert float(result.per_head["tema_dv"]) == pytest.approx(float(metrics["loss_head/tema_dv"]), rel=1e-6)
  assert set(result.grads) == {"student", "teacher"}
  assert jax.tree.structure(result.grads["student"]) == jax.tree.structure(state.student.params)
  for a, b in zip(jax.tree.leaves(result.state), jax.tree.leaves(jax.device_get(trained))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert int(result.state.step) == 1


def test_research_step_rejects_views_it_cannot_use():
  c = online_config()
  state = fresh_state(c)
  v = jnp.zeros((16,) + IMAGE_SHAPE)
  with pytest.raises(ValueError, match="needs labels"):
    step_lib.research_step(c, state, v, v, total_steps=TOTAL_STEPS)
  with pytest.raises(ValueError, match="set config.train.batch_size=8"):
    step_lib.research_step(c, state, v[:8], v[:8], jnp.zeros(8, jnp.int32), total_steps=TOTAL_STEPS)
  with pytest.raises(ValueError, match="must be float views"):
    step_lib.research_step(c, state, v.astype(jnp.uint8), v, jnp.zeros(16, jnp.int32), total_steps=TOTAL_STEPS)


def test_research_step_computes_in_float64_when_x64_is_on():
  c = online_config()
  c.optim.warmup_epochs = 0.0
  rng = np.random.default_rng(1)
  views = rng.normal(size=(2, 16) + IMAGE_SHAPE)
  labels = rng.integers(0, 10, (16,)).astype(np.int32)
  # Scoped: arrays and programs made inside are float64-capable; the other tests stay float32.
  with jax.enable_x64(True):
    state = fresh_state(c)
    floats = {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert floats == {jnp.dtype(jnp.float32)}  # params, statistics and optimizer state stay float32
    r64 = step_lib.research_step(
      c, state, jnp.asarray(views[0]), jnp.asarray(views[1]), labels, total_steps=TOTAL_STEPS
    )
    r32 = step_lib.research_step(
      c, state, jnp.asarray(views[0], jnp.float32), jnp.asarray(views[1], jnp.float32), labels, total_steps=TOTAL_STEPS
    )
  assert jnp.zeros(1).dtype == jnp.dtype(jnp.float32)  # nothing leaked out of the scope
  floats64 = [
    r64.loss,
    *r64.per_head.values(),
    *r64.metrics.values(),
    *jax.tree.leaves(r64.grads),
    *[x for x in jax.tree.leaves(r64.state) if not jnp.issubdtype(x.dtype, jnp.integer)],
  ]
  assert {x.dtype for x in floats64} == {jnp.dtype(jnp.float64)}
  assert {x.dtype for x in jax.tree.leaves(r32.grads)} == {jnp.dtype(jnp.float32)}
  assert float(r64.loss) == pytest.approx(float(r32.loss), rel=1e-5)
  for h in r64.per_head:
    assert float(r64.per_head[h]) == pytest.approx(float(r32.per_head[h]), rel=1e-5)
  # τ and the learning rate of step 0 to float64 precision (float32 would round 0.99 at 1e-8).
  assert float(r64.metrics["tau"]) == pytest.approx(c.ema.base, rel=1e-14)
  assert float(r64.metrics["lr"]) == pytest.approx(c.optim.base_lr * c.train.batch_size / 256, rel=1e-14)
  # The gradients agree to float32's precision; float64 is what removes the rest.
  g64, g32 = (np.concatenate([np.ravel(g) for g in jax.tree.leaves(r.grads)]) for r in (r64, r32))
  assert np.linalg.norm(g64 - g32) <= 1e-4 * np.linalg.norm(g64)
  assert np.linalg.norm(g64 - g32) > 0
