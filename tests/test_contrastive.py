"""MoCo-v2 / SEED building blocks against values known exactly (one-hot embeddings) and the queue's slots."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from simdis_jax import parallel
from simdis_jax.methods import common

E = np.eye(4, dtype=np.float32)  # orthonormal embeddings e0..e3


def test_info_nce_of_one_hot_embeddings_is_known_exactly():
  t = 0.2
  # q = k = e0, negatives e1, e2: logits [1/T, 0, 0] -> loss log(1 + 2 e^{-1/T}).
  loss, logits = common.info_nce(E[:1], E[:1], E[1:3], t)
  np.testing.assert_allclose(logits, [[1 / t, 0.0, 0.0]], rtol=1e-6)
  np.testing.assert_allclose(loss, math.log(1 + 2 * math.exp(-1 / t)), rtol=0, atol=1e-6)  # float32 log-sum-exp
  # The positive orthogonal to q and q itself in the queue: logits [0, 1/T, 0] -> log(e^{1/T} + 2).
  loss, _ = common.info_nce(E[:1], E[1:2], E[[0, 2]], t)
  np.testing.assert_allclose(loss, math.log(math.exp(1 / t) + 2), rtol=1e-6)


def test_info_nce_sends_no_gradient_to_the_key_or_the_queue():
  q, k, queue = jnp.asarray(E[:2]), jnp.asarray(E[1:3]), jnp.asarray(E)
  gq, gk, gqueue = jax.grad(lambda *a: common.info_nce(*a, 0.2)[0], argnums=(0, 1, 2))(q, k, queue)
  assert np.abs(np.asarray(gq)).max() > 0.1
  assert not np.any(np.asarray(gk)) and not np.any(np.asarray(gqueue))


def test_seed_loss_is_infonce_at_a_near_zero_teacher_temperature_and_uniform_ce_at_a_huge_one():
  rng = np.random.default_rng(0)
  s = rng.normal(size=(3, 4)).astype(np.float32)
  s /= np.linalg.norm(s, axis=1, keepdims=True)
  t, queue = E[:3], E[[3, 1]]  # t·t = 1 beats every t·Q <= 1 - so tau_t -> 0 puts all mass on the positive
  seed, logits = common.seed_loss(s, t, queue, 0.2, 1e-4)
  nce, nce_logits = common.info_nce(s, t, queue, 0.2)
  np.testing.assert_allclose(logits, nce_logits, rtol=1e-6)
  np.testing.assert_allclose(seed, nce, rtol=1e-5)
  # tau_t huge: the target is uniform over the 3 entries -> loss = mean_b -(1/3) sum_j log_softmax(z)_j.
  uniform, _ = common.seed_loss(s, t, queue, 0.2, 1e9)
  z = np.asarray(logits, np.float64)
  log_softmax = z - np.log(np.exp(z).sum(-1, keepdims=True))
  np.testing.assert_allclose(uniform, np.mean(-log_softmax.mean(-1)), rtol=1e-5)


def test_seed_loss_of_a_student_equal_to_its_teacher_at_equal_temperatures_is_the_target_entropy():
  t = E[:2] * 0.6 + E[2:4] * 0.8  # unit rows, not orthogonal to the queue
  queue = E[[0, 2]]
  loss, _ = common.seed_loss(t, t, queue, 0.5, 0.5)
  logits = np.concatenate([np.ones((2, 1)), t @ queue.T], 1) / 0.5
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(loss, np.mean(-(p * np.log(p)).sum(-1)), rtol=1e-5)


def test_the_queue_holds_the_last_keys_in_their_slots_and_the_pointer_wraps():
  queue, ptr = common.init_queue(jax.random.PRNGKey(0), 8, 3), jnp.int32(0)
  np.testing.assert_allclose(np.linalg.norm(queue, axis=1), np.ones(8), rtol=1e-6)
  batches = [np.full((2, 3), step, np.float32) for step in range(1, 6)]
  for keys in batches:
    queue, ptr = common.enqueue(queue, ptr, jnp.asarray(keys))
  assert int(ptr) == 2  # 5 batches of 2 in 8 slots: wrapped once
  np.testing.assert_array_equal(np.asarray(queue)[:, 0], [5, 5, 2, 2, 3, 3, 4, 4])
  with pytest.raises(ValueError, match=r"queue \(8\) must be a multiple of the global batch \(3\)"):
    common.enqueue(queue, ptr, jnp.zeros((3, 3)))


def test_momentum_update_is_the_exact_convex_combination_over_the_key_encoders_params():
  key = {"encoder": {"w": jnp.array([1.0, 2.0])}, "projector": {"b": jnp.array([4.0])}}
  query = {
    "encoder": {"w": jnp.array([3.0, 0.0])},
    "projector": {"b": jnp.array([0.0])},
    "predictor": {"b": jnp.array([9.0])},
  }
  new = common.momentum_update(key, query, 0.75)
  np.testing.assert_array_equal(new["encoder"]["w"], [1.5, 1.5])
  np.testing.assert_array_equal(new["projector"]["b"], [3.0])
  assert set(new) == {"encoder", "projector"}


def test_shuffle_bn_gives_each_device_other_examples_and_unshuffle_restores_the_order():
  devices = jax.devices()[:8]
  mesh = parallel.make_mesh(devices)
  n = 16
  x = jnp.arange(n, dtype=jnp.float32)[:, None]
  perm = jax.random.permutation(jax.random.PRNGKey(3), n)

  def per_device(x_local, perm):
    shuffled = common.shuffle_to_devices(x_local, perm, parallel.DATA_AXIS)
    # A per-device "BN statistic" of the shuffled chunk, and the outputs brought back.
    mean = jnp.broadcast_to(jnp.mean(shuffled), x_local.shape)
    return shuffled, mean, common.unshuffle_from_devices(shuffled * 10.0, perm, parallel.DATA_AXIS)

  shuffled, means, back = jax.jit(
    jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(parallel.DATA_AXIS), P()), out_specs=P(parallel.DATA_AXIS), check_vma=False
    )
  )(x, perm)
  np.testing.assert_array_equal(np.asarray(shuffled)[:, 0], np.asarray(perm, np.float32))
  np.testing.assert_array_equal(np.asarray(back), np.asarray(x) * 10.0)
  local_means = np.asarray(x)[:, 0].reshape(8, 2).mean(1)
  shuffled_means = np.asarray(means)[::2, 0]
  assert not np.array_equal(local_means, shuffled_means)  # other examples than the device's own
  np.testing.assert_allclose(shuffled_means, np.asarray(perm, np.float32).reshape(8, 2).mean(1))
