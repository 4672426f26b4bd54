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
  order = (
    np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), x.shape[0])) if shuffle else np.arange(x.shape[0])
  )
  variables = {"params": state_after.student.ema_params, "batch_stats": state_before.student.ema_batch_stats}
  n = x.shape[0] // devices
  shuffled = v2[order]
  chunks = [
    nets.student_ema.apply(variables, shuffled[d * n : (d + 1) * n], train=True, mutable=["batch_stats"])[0][
      "projection"
    ]
    for d in range(devices)
  ]
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
      assert any(set(order[d * n : (d + 1) * n]) != set(range(d * n, (d + 1) * n)) for d in range(DEVICES))
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


def restore(mgr, create, mesh):
  """The latest checkpoint of `mgr` restored replicated on `mesh` as the tree `create` makes; closes `mgr`."""
  restored = checkpoint.restore_latest(mgr, parallel.replicated_abstract(jax.eval_shape(create), mesh))
  mgr.close()
  return restored


def save_and_restore(workdir, step, state, create, mesh):
  """`state` saved as checkpoint `step` in `workdir` (with its per-array checksums), then restored."""
  mgr = checkpoint.manager(workdir)
  checkpoint.save(mgr, step, state)
  mgr.wait_until_finished()
  return restore(mgr, create, mesh)


def assert_next_step_is_the_same(step, mesh, state, restored):
  """The next step from the restored state is the same step: the queues after it are equal."""
  x, y = images(mesh, BATCH, seed=9)
  a, _ = step(state, x, y)
  b, _ = step(restored, x, y)
  np.testing.assert_array_equal(host(a.queue["queue"]), host(b.queue["queue"]))


def test_queue_restores_exactly_after_a_save(tmp_path):
  c = moco_config(shuffle_bn=True, queue=2 * BATCH)
  mesh, _, create, state, step = build(c, devices=2)
  for i in range(3):
    state, _ = step(state, *images(mesh, BATCH, seed=i))
  restored = save_and_restore(str(tmp_path), 3, state, create, mesh)
  np.testing.assert_array_equal(host(restored.queue["queue"]), host(state.queue["queue"]))
  assert int(restored.queue["ptr"]) == int(state.queue["ptr"]) == BATCH
  assert_next_step_is_the_same(step, mesh, state, restored)


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
  old = TrainStateBeforeQueues(
    state.step, state.rng, state.student, state.teacher, state.opt_state, state.probe, state.probe_opt_state
  )
  mgr = checkpoint.manager(str(tmp_path))
  mgr.save(1, args=checkpoint.ocp.args.StandardSave(old))
  mgr.wait_until_finished()
  restored = restore(mgr, create, mesh)
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


# --- Research step (float64): the numbers a user compares with the authors' PyTorch code ---


def fresh_state(config):
  """A new float32 train state of `config` (unsharded)."""
  nets = build_networks(config)
  tx = optim.make_optimizer(config.optim, optim.make_schedule(config, 10, 0))
  return jax.jit(functools.partial(create_train_state, config, nets, tx, IMAGE_SHAPE))()


def unit_rows(x):
  """Rows scaled to unit length, in numpy float64."""
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def soft_cross_entropy(logits, targets):
  """−Σ p log softmax(z), averaged over rows, in numpy float64."""
  z = logits - logits.max(-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return float(np.mean(-(targets * log_p).sum(-1)))


def test_moco_research_step_in_float64_matches_infonce_by_hand_and_the_train_step():
  c = moco_config(shuffle_bn=True, queue=2 * BATCH)
  rng = np.random.default_rng(3)
  v1, v2 = rng.normal(size=(2, BATCH) + IMAGE_SHAPE)
  perm = rng.permutation(BATCH)
  with jax.enable_x64(True):
    state = fresh_state(c)
    r = step_lib.research_step(c, state, jnp.asarray(v1), jnp.asarray(v2), permutation=perm, total_steps=10)
    r_id = step_lib.research_step(c, state, jnp.asarray(v1), jnp.asarray(v2), total_steps=10)
    nets = build_networks(c, dtype=jnp.float64)
    s64 = step_lib.cast_floats(state, jnp.float64)
    # The key encoder after the momentum step, on the key crop, train-mode BN over the whole batch.
    key_params = jax.tree.map(
      lambda k, q: 0.999 * k + 0.001 * q,
      s64.student.ema_params,
      {n: s64.student.params[n] for n in s64.student.ema_params},
    )
    k = nets.student_ema.apply(
      {"params": key_params, "batch_stats": s64.student.ema_batch_stats},
      jnp.asarray(v2),
      train=True,
      mutable=["batch_stats"],
    )[0]["projection"]
    q = nets.student.apply(
      {"params": s64.student.params, "batch_stats": s64.student.batch_stats},
      jnp.asarray(v1),
      train=True,
      mutable=["batch_stats"],
    )[0]["projection"]
  q, k = (unit_rows(x) for x in (q, k))
  queue0 = np.asarray(state.queue["queue"], np.float64)
  expected_logits = np.concatenate([(q * k).sum(-1, keepdims=True), q @ queue0.T], -1) / 0.2
  assert r.logits.dtype == jnp.float64 and r.logits.shape == (BATCH, 1 + 2 * BATCH)
  np.testing.assert_allclose(np.asarray(r.logits), expected_logits, rtol=1e-10, atol=1e-10)
  onehot = np.eye(1 + 2 * BATCH)[np.zeros(BATCH, int)]
  assert float(r.loss) == pytest.approx(soft_cross_entropy(expected_logits, onehot), rel=1e-10)
  # The queue after the step: the keys in rows [0, B), the rest untouched; the pointer moved by B.
  np.testing.assert_allclose(np.asarray(r.queue[:BATCH]), k, rtol=1e-10, atol=1e-10)
  np.testing.assert_array_equal(np.asarray(r.queue[BATCH:]), queue0[BATCH:])
  assert int(r.ptr) == BATCH
  assert {g.dtype for g in jax.tree.leaves(r.grads)} == {jnp.dtype(jnp.float64)}
  # One device: the shuffle only reorders the key batch, whose BN statistics do not depend on the order.
  np.testing.assert_allclose(np.asarray(r.logits), np.asarray(r_id.logits), rtol=1e-9, atol=1e-9)


def seed_config(queue=2 * BATCH):
  """Tiny SEED: the student's head outputs the teacher's dimension."""
  c = tiny_config("seed", "byol")
  c.teacher.workdir = "unused by the step"
  c.model.student.projector = "moco"
  c.model.sync_bn = False
  c.teacher.bn_mode = "eval"
  c.seed_distill.queue_size = queue
  c.seed_distill.teacher_temperature = 0.05  # a soft target, so that every queue entry weighs in the check
  c.optim.name = "sgd"
  return c


def test_seed_research_step_in_float64_is_the_soft_cross_entropy_over_teacher_and_queue():
  c = seed_config()
  rng = np.random.default_rng(4)
  v1, v2, other = rng.normal(size=(3, BATCH) + IMAGE_SHAPE)
  with jax.enable_x64(True):
    state = fresh_state(c)
    r = step_lib.research_step(c, state, jnp.asarray(v1), jnp.asarray(v2), total_steps=10)
    r_other = step_lib.research_step(c, state, jnp.asarray(v1), jnp.asarray(other), total_steps=10)
    nets = build_networks(c, dtype=jnp.float64)
    s64 = step_lib.cast_floats(state, jnp.float64)
    # The teacher in eval mode (running statistics), the student in train mode, both on view 1 only.
    t = nets.teacher.apply(
      {"params": s64.teacher.params, "batch_stats": s64.teacher.batch_stats}, jnp.asarray(v1), train=False
    )["projection"]
    s = nets.student.apply(
      {"params": s64.student.params, "batch_stats": s64.student.batch_stats},
      jnp.asarray(v1),
      train=True,
      mutable=["batch_stats"],
    )[0]["projection"]
  s, t = (unit_rows(x) for x in (s, t))
  queue0 = np.asarray(state.queue["queue"], np.float64)
  student_logits = np.concatenate([(s * t).sum(-1, keepdims=True), s @ queue0.T], -1) / 0.2
  teacher_logits = np.concatenate([(t * t).sum(-1, keepdims=True), t @ queue0.T], -1) / 0.05
  targets = np.exp(teacher_logits - teacher_logits.max(-1, keepdims=True))
  targets /= targets.sum(-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(r.logits), student_logits, rtol=1e-10, atol=1e-10)
  assert float(r.loss) == pytest.approx(soft_cross_entropy(student_logits, targets), rel=1e-10)
  np.testing.assert_allclose(np.asarray(r.queue[:BATCH]), t, rtol=1e-10, atol=1e-10)
  assert int(r.ptr) == BATCH
  # One view: the second view does not enter the step; the teacher gets no gradient.
  assert float(r_other.loss) == float(r.loss)
  assert set(r.grads) == {"student"}
  for a, b in zip(jax.tree.leaves(r.state.teacher), jax.tree.leaves(s64.teacher)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_step_schedule_decays_tenfold_every_step_epochs_and_cosine_is_unchanged():
  c = tiny_config("supervised", "byol")
  c.optim.base_lr = 0.1
  c.train.batch_size = 512
  c.train.epochs = 90.0
  c.optim.warmup_epochs = 0.0
  cosine = optim.make_schedule(c, 900, 0)
  reference = optim.warmup_cosine_schedule(0.1, 512, 900, 0, c.optim.warmup_init_lr)
  assert [float(cosine(k)) for k in (0, 450, 899)] == [float(reference(k)) for k in (0, 450, 899)]
  c.optim.schedule = "step"
  c.optim.step_epochs = 30.0
  step = optim.make_schedule(c, 900, 0, steps_per_epoch=10)  # decays at steps 300 and 600
  values = [float(step(k)) for k in (0, 299, 300, 599, 600, 899)]
  np.testing.assert_allclose(values, [0.2, 0.2, 0.02, 0.02, 0.002, 0.002], rtol=1e-6)


def test_supervised_views_1_runs_one_crop_per_image():
  from simdis_jax.methods import supervised  # pylint: disable=import-outside-toplevel

  c = tiny_config("supervised", "byol")
  assert [f.views for f in supervised.forwards(c)] == [(0, 1)]
  c.supervised.views = 1
  assert [f.views for f in supervised.forwards(c)] == [(0,)]
