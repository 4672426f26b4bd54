"""DeepMind's BYOL as DeepMind computes it: style="haiku" networks, head_bias=False, Haiku's BN averages and
init, the online classifier in the loss, and the DeepMind recipe's float64 research step against DeepMind's
update (deepmind-research/byol at f5de0ed, byol_experiment.py), rebuilt here with dm-haiku and optax from
their code's formulas. Source lines are cited as `file:line` under byol/.
"""

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from simdis_jax import config_files, configuration, optim, step as step_lib
from simdis_jax.interop import deepmind
from simdis_jax.models import batch_norm, resnet
from simdis_jax.models.network import Network
from simdis_jax.state import build_networks, create_train_state

import haiku_byol  # noqa: E402  pylint: disable=wrong-import-position,import-error

hk = pytest.importorskip("haiku")
Torso, MLP = haiku_byol.modules()  # networks.py's ResNetTorso and MLP (tests/haiku_byol.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dm_forward(depth, width, hidden, proj, classes):
  """byol_experiment.py:107-187 `_forward`: per view the torso, projector, predictor and the classifier on the
  stop-gradient embedding (the images arrive normalised and augmented here, as the research step's views)."""

  def forward(inputs, is_training):
    net, projector = Torso(depth, width, name=f"res_net{depth}"), MLP(hidden, proj, name="projector")
    predictor, classifier = MLP(hidden, proj, name="predictor"), hk.Linear(classes, name="classifier")
    outputs = {}
    for view in ("view1", "view2"):
      embedding = net(inputs[view], is_training)
      projection = projector(embedding, is_training)
      outputs.update(
        {
          f"projection_{view}": projection,
          f"prediction_{view}": predictor(projection, is_training),
          f"logits_{view}": classifier(jax.lax.stop_gradient(embedding)),
        }
      )
    return outputs

  return hk.without_apply_rng(hk.transform_with_state(forward))


def dm_regression_loss(x, y):
  """helpers.py:74-82 and :109-112: || x / ||x|| - y / ||y|| ||^2 with rsqrt(max(sum of squares, 1e-12))."""
  normed = [v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v**2, -1, keepdims=True), 1e-12)) for v in (x, y)]
  return jnp.sum((normed[0] - normed[1]) ** 2, axis=-1)


def dm_update(forward, classes, batch, base_lr, weight_decay, base_ema, total_steps):
  """byol_experiment.py:197-351 (loss_fn and _update_fn) with optimizers.py's LARS and schedules.py, jitted.

  (online, target, online_state, target_state, mu), step, inputs -> (new state, loss, repr, classif, grads).
  The warm-up branch of schedules.py:35-37 is not needed: these steps have no warm-up.
  """

  def loss_fn(online, target, online_state, target_state, inputs):
    online_out, online_state = forward.apply(online, online_state, inputs, is_training=True)
    target_out, target_state = forward.apply(target, target_state, inputs, is_training=True)
    repr_loss = jnp.mean(
      dm_regression_loss(online_out["prediction_view1"], jax.lax.stop_gradient(target_out["projection_view2"]))
      + dm_regression_loss(online_out["prediction_view2"], jax.lax.stop_gradient(target_out["projection_view1"]))
    )
    labels = jax.nn.one_hot(inputs["labels"], classes)
    classif = jnp.mean(-jnp.sum(labels * jax.nn.log_softmax(online_out["logits_view1"]), axis=-1))
    return repr_loss + classif, (online_state, target_state, repr_loss, classif)

  def lars(grads, mu, params, lr):
    """optimizers.py:144-187 with exclude_bias_and_norm (:30-35) as both filters, momentum 0.9, eta 1e-3."""
    updates, new_mu = {}, {}
    for module, leaves in grads.items():
      updates[module], new_mu[module] = {}, {}
      for name, g in leaves.items():
        p = params[module][name]
        if name == "b" or "norm" in module:
          u = g
        else:
          u = g + weight_decay * p
          p_norm, u_norm = jnp.linalg.norm(p), jnp.linalg.norm(u)
          u = u * jnp.where(p_norm > 0.0, jnp.where(u_norm > 0, 1e-3 * p_norm / u_norm, 1.0), 1.0)
        new_mu[module][name] = 0.9 * mu[module][name] + u
        updates[module][name] = -lr * new_mu[module][name]
    return updates, new_mu

  def update(state, step, inputs):
    online, target, online_state, target_state, mu = state
    grads, (online_state, target_state, repr_loss, classif) = jax.grad(loss_fn, has_aux=True)(
      online, target, online_state, target_state, inputs
    )
    scaled = base_lr * batch / 256.0
    progress = jnp.pi * jnp.minimum(step, total_steps) / total_steps
    lr = scaled * (0.5 * (1 + jnp.cos(progress)))  # schedules.py:40-53 after (here: without) the warm-up
    updates, mu = lars(grads, mu, online, lr)
    online = optax.apply_updates(online, updates)
    tau = 1.0 - (1.0 - base_ema) * (0.5 * (1 + jnp.cos(progress)))  # schedules.py:20-24
    target = jax.tree.map(lambda x, y: x + (1 - tau) * (y - x), target, online)  # byol_experiment.py:342
    return (online, target, online_state, target_state, mu), repr_loss + classif, repr_loss, classif, grads

  return jax.jit(update)


def perturbed(params, seed):
  """BN scales / offsets and biases moved off their init (1, 0, 0), so that no term is trivially zero."""
  keys = iter(jax.random.split(jax.random.PRNGKey(seed), 1000))
  noise = {
    "scale": lambda v: 1 + 0.2 * jax.random.normal(next(keys), v.shape, v.dtype),
    "offset": lambda v: 0.1 * jax.random.normal(next(keys), v.shape, v.dtype),
    "b": lambda v: 0.1 * jax.random.normal(next(keys), v.shape, v.dtype),
  }
  return {m: {k: noise.get(k, lambda v: v)(v) for k, v in d.items()} for m, d in params.items()}


def relative(got, want):
  """max |got - want| / max |want| over one array (0 where both are 0)."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  scale = np.max(np.abs(want)) if want.size else 0.0
  err = np.max(np.abs(got - want)) if want.size else 0.0
  return err / scale if scale > 0 else err


def worst(got_tree, want_tree):
  """The largest `relative` over matching leaves (the trees must have one structure).

  A leaf below 1e-12 of the tree's largest value is zero up to rounding (the gradient of a bias before a
  training-mode BN, which subtracts it back out, is ~1e-17 on both sides): it counts relative to the tree.
  """
  assert jax.tree.structure(got_tree) == jax.tree.structure(want_tree)
  pairs = [
    (np.asarray(a, np.float64), np.asarray(b, np.float64))
    for a, b in zip(jax.tree.leaves(got_tree), jax.tree.leaves(want_tree))
  ]
  top = max(np.max(np.abs(b)) for _, b in pairs if b.size)
  return max(relative(a, b) if np.max(np.abs(b)) >= 1e-12 * top else np.max(np.abs(a - b)) / top for a, b in pairs)


def without(tree, *prefixes):
  return {k: v for k, v in tree.items() if not k.startswith(prefixes)}


DEPTH, WIDTH, HIDDEN, PROJ, CLASSES, BATCH, SIZE, TOTAL = 10, 2, 32, 16, 5, 8, 32, 10


def recipe_config():
  """configs/imagenet/byol_r50_deepmind.py with a ResNet-10 of width 2 (basic blocks, as DeepMind's TinyResNet,
  networks.py:154-181), small heads and batch 8: XLA's float64 compile of ResNet-50 takes minutes on 2 cores.
  The bottleneck's computation is checked against Haiku's in tests/test_import_deepmind.py."""
  c = config_files.load_config(os.path.join(ROOT, "configs/imagenet/byol_r50_deepmind.py"))
  c.model.student.depth, c.model.student.width = DEPTH, WIDTH
  c.model.student.hidden_dim, c.model.student.proj_dim = HIDDEN, PROJ
  c.probe.num_classes, c.train.batch_size, c.train.steps = CLASSES, BATCH, TOTAL
  c.data.image_size = SIZE
  return configuration.validate(c)


@pytest.mark.slow
def test_deepmind_recipe_research_step_equals_deepminds_update_after_two_steps():
  """Losses, gradients, online and target params (and their changes), both BN averages and the counters after
  each of two steps at a non-zero learning rate (cosine, no warm-up), float64, relative error <= 1e-9."""
  c = recipe_config()
  net = f"res_net{DEPTH}"
  forward = dm_forward(DEPTH, WIDTH, HIDDEN, PROJ, CLASSES)
  rng = np.random.default_rng(0)
  views = rng.normal(size=(2, 2, BATCH, SIZE, SIZE, 3))  # even size: every stride-2 SAME pad is asymmetric
  labels = rng.integers(0, CLASSES, BATCH).astype(np.int32)
  with jax.enable_x64(True):
    dummy = {"view1": jnp.asarray(views[0, 0], jnp.float32), "view2": jnp.asarray(views[0, 1], jnp.float32)}
    # Online and target from different keys (byol_experiment.py:368-385), float32 as DeepMind's.
    init = jax.jit(lambda key: forward.init(key, dummy, True))
    (online, online_state), (target, target_state) = init(jax.random.PRNGKey(0)), init(jax.random.PRNGKey(1))
    online, target = jax.jit(perturbed, static_argnums=1)(online, 2), jax.jit(perturbed, static_argnums=1)(target, 3)
    # This project's state holds the same float32 values (imported as --format deepmind does).
    imported, arch, _, _ = deepmind._network(online, online_state, True)  # pylint: disable=protected-access
    imported_target, _, _, _ = deepmind._network(target, target_state, False)  # pylint: disable=protected-access
    assert (arch["style"], arch["head_bias"]) == ("haiku", False)
    imported["params"]["probe"] = {"kernel": online["classifier"]["w"], "bias": online["classifier"]["b"]}
    nets = build_networks(c)
    tx = optim.make_optimizer(c.optim, optim.warmup_cosine_schedule(1.0, 256, TOTAL, 0))
    fresh = jax.jit(functools.partial(create_train_state, c, nets, tx, (SIZE, SIZE, 3)))()

    def same_tree(fresh_tree, new_tree):
      assert jax.tree.structure(fresh_tree) == jax.tree.structure(new_tree)  # DeepMind's network, variable by variable
      return jax.tree.map(lambda a, b: np.asarray(b, a.dtype).reshape(a.shape), fresh_tree, new_tree)

    s = fresh.student
    state = jax.device_get(
      fresh.replace(
        student=s.replace(
          params=same_tree(s.params, imported["params"]),
          batch_stats=same_tree(s.batch_stats, imported["batch_stats"]),
          ema_params=same_tree(s.ema_params, imported_target["params"]),
          ema_batch_stats=same_tree(s.ema_batch_stats, imported_target["batch_stats"]),
        )
      )
    )
    ours = step_lib.make_research_step(c, TOTAL, 0, jnp.float64)
    theirs = dm_update(forward, CLASSES, BATCH, c.optim.base_lr, c.optim.weight_decay, c.ema.base, TOTAL)
    f64 = lambda tree: jax.tree.map(lambda x: x.astype(np.float64) if x.dtype == np.float32 else x, tree)
    dm_state = f64(jax.device_get((online, target, online_state, target_state, jax.tree.map(np.zeros_like, online))))
    errors = {}
    for k in range(2):
      before_ours, before_dm = state.student, dm_state
      inputs = {"view1": jnp.asarray(views[k, 0]), "view2": jnp.asarray(views[k, 1]), "labels": jnp.asarray(labels)}
      result = ours(state, inputs["view1"], inputs["view2"], jnp.asarray(labels))
      dm_state, loss, repr_loss, classif, grads = jax.device_get(theirs(dm_state, jnp.asarray(k), inputs))
      # NumPy from here on: the comparisons compile nothing.
      result = jax.device_get(result)
      state, s = result.state, result.state.student
      assert float(result.metrics["lr"]) > 0
      online_hk = deepmind.to_haiku({"params": s.params, "batch_stats": s.batch_stats}, net)
      target_hk = deepmind.to_haiku({"params": s.ema_params, "batch_stats": s.ema_batch_stats}, net)
      grads_hk = deepmind.to_haiku({"params": result.grads["student"], "batch_stats": s.batch_stats}, net)[0]
      delta = lambda after, before: jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), after, before)
      online_before = deepmind.to_haiku({"params": before_ours.params, "batch_stats": before_ours.batch_stats}, net)
      target_before = deepmind.to_haiku(
        {"params": before_ours.ema_params, "batch_stats": before_ours.ema_batch_stats}, net
      )
      dm_target = without(dm_state[1], "predictor", "classifier")
      errors[k] = {
        "loss": relative(result.loss, loss),
        "repr_loss": relative(result.per_head["sema_dv"], repr_loss),
        "classifier_loss": relative(result.metrics["probe_loss/student"], classif),
        "gradients": worst(grads_hk, grads),
        "online_params": worst(online_hk[0], dm_state[0]),
        "online_param_changes": worst(delta(online_hk[0], online_before[0]), delta(dm_state[0], before_dm[0])),
        "target_params": worst(target_hk[0], dm_target),
        "target_param_changes": worst(
          delta(target_hk[0], target_before[0]), delta(dm_target, without(before_dm[1], "predictor", "classifier"))
        ),
        "online_bn_averages": worst(online_hk[1], dm_state[2]),
        "target_bn_averages": worst(target_hk[1], without(dm_state[3], "predictor")),
      }
      # The counters are exact: two train-mode passes (the two views) per step.
      assert {int(v["counter"]) for v in online_hk[1].values()} == {int(v["counter"]) for v in dm_state[2].values()}
  print("max relative difference after steps 1 and 2:", errors)
  for k, errs in errors.items():
    for what, err in errs.items():
      assert err <= 1e-9, f"step {k + 1}: {what} differs by {err:.2e} relative"


def truncated_normal_variance(bound=2.0):
  """Var of N(0, 1) truncated to [-bound, bound]: 1 - 2 b phi(b) / (Phi(b) - Phi(-b))."""
  phi = math.exp(-bound * bound / 2) / math.sqrt(2 * math.pi)
  return 1 - 2 * bound * phi / math.erf(bound / math.sqrt(2))


@pytest.mark.slow
def test_haiku_style_has_deepminds_shapes_init_and_two_bn_averages():
  x = jnp.zeros((2, 32, 32, 3))
  for depth, width in ((18, 4), (50, 2)):
    ours = Network(
      depth, width, False, HIDDEN, PROJ, heads=("sema_dv",), style="haiku", head_bias=False, probe_classes=CLASSES
    )
    variables = jax.jit(functools.partial(ours.init, train=False))(jax.random.PRNGKey(0), x)
    params, state = deepmind.to_haiku(variables, f"res_net{depth}")
    want = jax.eval_shape(
      lambda: dm_forward(depth, width, HIDDEN, PROJ, CLASSES).init(
        jax.random.PRNGKey(0), {"view1": x, "view2": x}, True
      )
    )
    # Every parameter and BN statistic of DeepMind's network, by name and shape; no bias on linear_1.
    shapes = lambda tree: jax.tree.map(lambda v: tuple(v.shape), tree)
    assert shapes(params) == shapes(want[0]) and shapes(state) == shapes(want[1])
    assert set(params["projector/linear_1"]) == set(params["predictor/linear_1"]) == {"w"}
  # Haiku's init (hk.Conv2D / hk.Linear: N(0, 1) truncated at +-2, times 1/sqrt(fan_in); biases 0), measured on a
  # wider network; a bottleneck's last BN starts at scale 0 (Haiku's BlockV1), every other BN at 1.
  wide = Network(50, 8, False, 512, 128, heads=("sema_dv",), style="haiku", head_bias=False, probe_classes=10)
  variables = jax.jit(functools.partial(wide.init, train=False))(jax.random.PRNGKey(1), x)
  params, state = deepmind.to_haiku(variables, "res_net50")
  scaled = [np.ravel(v["w"]) * math.sqrt(np.prod(v["w"].shape[:-1])) for v in params.values() if "w" in v]
  scaled = np.concatenate(scaled)
  assert scaled.size > 500_000 and np.abs(scaled).max() <= 2.0
  assert np.mean(scaled**2) == pytest.approx(truncated_normal_variance(), rel=0.01)  # 0.774, not 1
  assert all(not np.any(v["b"]) for v in params.values() if "b" in v)
  scales = {k: float(np.mean(v["scale"])) for k, v in params.items() if "scale" in v}
  assert {k for k, s in scales.items() if s == 0.0} == {k for k in scales if k.endswith("/~/batchnorm_2")}
  assert all(s in (0.0, 1.0) for s in scales.values()) and len([s for s in scales.values() if s == 0.0]) == 16
  assert all(int(v["counter"]) == 0 and not np.any(v["hidden"]) for v in state.values())


def test_haiku_batch_norm_keeps_the_raw_and_the_debiased_average_and_evaluates_with_the_debiased_one():
  """Against the formulas of Haiku's ExponentialMovingAverage, computed here in float64 NumPy."""
  rng = np.random.default_rng(0)
  batches = [rng.normal(loc=1.0 + k, scale=2.0, size=(6, 3, 3, 4)) for k in range(3)]
  with jax.enable_x64(True):
    bn = resnet.batch_norm(True, None, jnp.float64, "haiku")()
    frozen = resnet.batch_norm(False, None, jnp.float64, "haiku")()
    variables = bn.init(jax.random.PRNGKey(0), jnp.asarray(batches[0]))
    variables = {
      "params": {"scale": jnp.asarray([1.0, 2.0, 0.5, 1.5]), "bias": jnp.asarray([0.1, -0.2, 0.0, 0.3])},
      "batch_stats": variables["batch_stats"],
    }
    hidden = {"mean": np.zeros(4), "var": np.zeros(4)}
    for k, x in enumerate(batches, 1):
      y, mutated = bn.apply(variables, jnp.asarray(x), mutable=["batch_stats"])
      variables = {"params": variables["params"], "batch_stats": mutated["batch_stats"]}
      stats = variables["batch_stats"]
      flat = x.reshape(-1, 4)
      for key, value in (("mean", flat.mean(0)), ("var", flat.var(0))):
        hidden[key] = 0.9 * hidden[key] + 0.1 * value
        np.testing.assert_allclose(stats[f"{key}_hidden"], hidden[key], rtol=1e-13)
        np.testing.assert_allclose(stats[key], hidden[key] / (1 - 0.9**k), rtol=1e-13)
      assert float(stats["counter"]) == k
      # Training normalises by the batch's own statistics.
      np.testing.assert_allclose(
        y,
        (x - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5) * [1.0, 2.0, 0.5, 1.5] + [0.1, -0.2, 0.0, 0.3],
        rtol=1e-12,
        atol=1e-12,
      )
    assert not np.allclose(stats["var"], stats["var_hidden"])  # 1 - 0.9^3 = 0.271: the two averages differ
    x = batches[0]
    want = (x - np.asarray(stats["mean"])) / np.sqrt(np.asarray(stats["var"]) + 1e-5) * [1.0, 2.0, 0.5, 1.5] + [
      0.1,
      -0.2,
      0.0,
      0.3,
    ]
    np.testing.assert_allclose(frozen.apply(variables, jnp.asarray(x)), want, rtol=1e-12, atol=1e-12)


def test_unbiased_running_variance_is_computed_in_the_steps_dtype():
  """model.bn_running_var="unbiased" in a float64 step: the batch variance in float64 (it was float32, ~1e-7 off)."""
  x = np.random.default_rng(0).normal(loc=3.0, size=(5, 2, 2, 3)) * (1 + 1e-3 * np.arange(3))
  flat = x.reshape(-1, 3)
  with jax.enable_x64(True):
    bn = resnet.batch_norm(True, None, jnp.float64, "unbiased")()
    variables = jax.tree.map(lambda v: v.astype(jnp.float64), bn.init(jax.random.PRNGKey(0), jnp.asarray(x)))
    _, mutated = bn.apply(variables, jnp.asarray(x), mutable=["batch_stats"])
  np.testing.assert_allclose(mutated["batch_stats"]["var"], 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-14)
  assert isinstance(bn, batch_norm.BatchNorm)
