"""MoCo-v2 and SEED through the real train step: the queue's slots, shuffle BN, checkpoints, the SEED teacher."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from simdis_jax import checkpoint, optim, parallel
from simdis_jax import step as step_lib
from simdis_jax.data import augment
from simdis_jax.methods.simdis import l2_normalize
from simdis_jax.state import build_networks, create_train_state
from test_step import IMAGE_SHAPE, host, images

DEVICES = 8
BATCH = 16


def moco_config(shuffle_bn=True, queue=32):
  """Tiny MoCo-v2: per-device BN with shuffle (or SyncBN), a queue of `queue` keys."""
  c = tiny_config("moco_v2", "byol")
  c.model.student.projector = "moco"
  c.model.sync_bn = not shuffle_bn
  c.moco.shuffle_bn = shuffle_bn
  c.moco.queue_size = queue
  c.optim.name = "sgd"
  c.optim.base_lr = 0.03
  return c


def build(config, devices=DEVICES, total_steps=10):
  """Mesh, networks, state and the jitted train step of `config`."""
  mesh = parallel.make_mesh(jax.devices()[:devices])
  nets = build_networks(config)
  sched = optim.make_schedule(config, total_steps, 0)
  tx = optim.make_optimizer(config.optim, sched)
  create = functools.partial(create_train_state, config, nets, tx, IMAGE_SHAPE)
  state = jax.jit(create, out_shardings=parallel.replicated(mesh))()
  return mesh, nets, create, state, step_lib.make_train_step(config, nets, tx, sched, total_steps, mesh)


def keys_by_hand(config, nets, state_before, state_after, x, devices, shuffle):
  """The keys the step should have enqueued, recomputed outside the step: the views it drew, the
  updated key encoder, each device's chunk (of the permuted batch if `shuffle`) with its own BN."""
  key = jax.random.fold_in(state_before.rng, state_before.step)
  _, v2 = augment.two_views(key, x, config.data.augment, out_size=config.data.image_size)
  order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), x.shape[0])) if shuffle \
      else np.arange(x.shape[0])
  variables = {"params": state_after.student.ema_params, "batch_stats": state_before.student.ema_batch_stats}
  n = x.shape[0] // devices
  shuffled = v2[order]
  chunks = [nets.student_ema.apply(variables, shuffled[d * n:(d + 1) * n], train=True,
                                   mutable=["batch_stats"])[0]["projection"] for d in range(devices)]
  keys = np.zeros((x.shape[0], config.model.student.proj_dim), np.float32)
  keys[order] = np.asarray(l2_normalize(jnp.concatenate(chunks)))
  return keys, order


def test_queue_holds_the_last_keys_in_their_slots_and_shuffle_bn_permutes_the_key_batch():
  c = moco_config(shuffle_bn=True, queue=2 * BATCH)
  mesh, nets, _, state, step = build(c)
  initial = host(state.queue["queue"])
  enqueued = []
  for i in range(3):
    x, y = images(mesh, BATCH, seed=i)
    before = host(state)
    state, metrics = step(state, x, y)
    after = host(state)
    keys, order = keys_by_hand(c, nets, before, after, np.asarray(x), DEVICES, shuffle=True)
    enqueued.append(keys)
    if i == 0:
      # Shuffle BN: each device's key batch is another subset of examples than its query batch ...
      n = BATCH // DEVICES
      assert any(set(order[d * n:(d + 1) * n]) != set(range(d * n, (d + 1) * n)) for d in range(DEVICES))
      # ... which changes the keys (per-device statistics of other examples) ...
      unshuffled, _ = keys_by_hand(c, nets, before, after, np.asarray(x), DEVICES, shuffle=False)
      assert np.max(np.abs(unshuffled - keys)) > 1e-2
      # ... and the keys come back in the original order (row j is example j's key).
    assert np.isfinite(float(metrics["loss"]))
  queue, ptr = after.queue["queue"], int(after.queue["ptr"])
  # 3 batches into 2 slots: the pointer wrapped after step 2; step 3 overwrote rows [0, 16).
  assert ptr == BATCH
  np.testing.assert_allclose(queue[:BATCH], enqueued[2], atol=2e-5)
  np.testing.assert_allclose(queue[BATCH:], enqueued[1], atol=2e-5)
  assert not np.allclose(queue[BATCH:], initial[BATCH:], atol=1e-2)


def test_queue_restores_exactly_after_a_save(tmp_path):
  c = moco_config(shuffle_bn=True, queue=2 * BATCH)
  mesh, _, create, state, step = build(c, devices=2)
  for i in range(3):
    state, _ = step(state, *images(mesh, BATCH, seed=i))
  mgr = checkpoint.manager(str(tmp_path))
  checkpoint.save(mgr, 3, state)
  mgr.wait_until_finished()
  abstract = parallel.replicated_abstract(jax.eval_shape(create), mesh)
  restored = checkpoint.restore_latest(mgr, abstract)
  mgr.close()
  np.testing.assert_array_equal(host(restored.queue["queue"]), host(state.queue["queue"]))
  assert int(restored.queue["ptr"]) == int(state.queue["ptr"]) == BATCH
  # The next step from the restored state is the same step.
  x, y = images(mesh, BATCH, seed=9)
  a, _ = step(state, x, y)
  b, _ = step(restored, x, y)
  np.testing.assert_array_equal(host(a.queue["queue"]), host(b.queue["queue"]))


@flax.struct.dataclass
class TrainStateBeforeQueues:
  """TrainState as it was before the queue field (the tree a BYOL checkpoint of then holds)."""
  step: jnp.ndarray
  rng: jnp.ndarray
  student: object
  teacher: object
  opt_state: object
  probe: object = None
  probe_opt_state: object = None


def test_a_byol_checkpoint_written_before_the_queue_field_restores(tmp_path):
  c = tiny_config("byol", "byol")
  mesh, _, create, state, _ = build(c, devices=1)
  assert state.queue is None
  old = TrainStateBeforeQueues(state.step, state.rng, state.student, state.teacher, state.opt_state,
                               state.probe, state.probe_opt_state)
  mgr = checkpoint.manager(str(tmp_path))
  mgr.save(1, args=checkpoint.ocp.args.StandardSave(old))
  mgr.wait_until_finished()
  restored = checkpoint.restore_latest(mgr, parallel.replicated_abstract(jax.eval_shape(create), mesh))
  mgr.close()
  assert restored is not None and restored.queue is None
  for a, b in zip(jax.tree.leaves(restored.student), jax.tree.leaves(state.student)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_syncbn_moco_keys_are_the_global_batch_statistics_keys():
  """SyncBN (the alternative): the keys equal a one-device pass over the whole batch."""
  c = moco_config(shuffle_bn=False, queue=2 * BATCH)
  mesh, nets, _, state, step = build(c)
  x, y = images(mesh, BATCH, seed=0)
  before = host(state)
  state, _ = step(state, x, y)
  after = host(state)
  keys, _ = keys_by_hand(c, nets, before, after, np.asarray(x), 1, shuffle=False)
  np.testing.assert_allclose(after.queue["queue"][:BATCH], keys, atol=2e-5)


def test_moco_config_checks():
  from simdis_jax import configuration  # pylint: disable=import-outside-toplevel
  c = moco_config()
  c.model.sync_bn = True
  with pytest.raises(ValueError, match="shuffle_bn=True needs per-device BN"):
    configuration.validate(c)
  c = moco_config(queue=40)
  with pytest.raises(ValueError, match="multiple of config.train.batch_size=16"):
    configuration.validate(c)
  c = tiny_config("seed", "byol")
  c.teacher.workdir = "/x"
  c.model.student.proj_dim = 8
  with pytest.raises(ValueError, match="proj_dim=16"):
    configuration.validate(c)
