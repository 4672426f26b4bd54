"""SimSiam: its loss by hand, the research step against the official formulas in float64 (torch), its optimizer,
and a SimSiam teacher inside SimDis-On."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import run_helpers
from conftest import tiny_config
from simdis_jax import configuration
from simdis_jax import step as step_lib
from simdis_jax.methods import simsiam
from simdis_jax.state import build_networks

BATCH = 16


def simsiam_config():
  c = run_helpers.tiny_method_config("simsiam", simsiam.recipe, proj_dim=32)
  c.simsiam.predictor_dim = 8
  return configuration.validate(c)


def test_negative_cosine_by_hand():
  e1, e2 = jnp.eye(2)[:1], jnp.eye(2)[1:]
  assert float(simsiam.negative_cosine(e1, e1)) == -1.0
  assert float(simsiam.negative_cosine(e1, e2)) == 0.0
  assert float(simsiam.negative_cosine(3.0 * e1, e1 + e2)) == pytest.approx(-1 / np.sqrt(2), rel=1e-7)
  # Stop-gradient: no gradient reaches z; at p = e1, z = e2 the gradient of -cos is -e2.
  np.testing.assert_array_equal(jax.grad(lambda z: simsiam.negative_cosine(e1, z))(e2), [[0.0, 0.0]])
  np.testing.assert_allclose(jax.grad(lambda p: simsiam.negative_cosine(p, e2))(e1), [[0.0, -1.0]], atol=1e-7)
  # Symmetric: p1 = z2 (cos 1), p2 ⟂ z1 (cos 0): L = (-1 + 0) / 2.
  outs = ({"predictions": {simsiam.HEAD: e1}, "projection": e1}, {"predictions": {simsiam.HEAD: e2}, "projection": e1})
  assert float(simsiam.symmetric_loss(outs)) == -0.5


def official_loss(p1, p2, z1, z2):
  """main_simsiam.py: criterion = nn.CosineSimilarity(dim=1); loss = -(D(p1, z2) + D(p2, z1)) * 0.5, z detached."""
  criterion = torch.nn.CosineSimilarity(dim=1)
  return -(criterion(p1, z2.detach()).mean() + criterion(p2, z1.detach()).mean()) * 0.5


def torch_leaves(*arrays):
  return [torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True) for a in arrays]


def test_research_step_in_float64_is_the_official_loss_gradient_and_update():
  c = simsiam_config()
  rng = np.random.default_rng(0)
  v1, v2 = rng.normal(size=(2, BATCH) + run_helpers.IMAGE_SHAPE)
  state = run_helpers.fresh_state(c)
  # 2 warm-up steps: the scheduled rate starts at warmup_init_lr, the predictor's at the peak
  with jax.enable_x64(True):
    r = step_lib.research_step(c, state, jnp.asarray(v1), jnp.asarray(v2), total_steps=10, warmup_steps=2, outputs=True)
    nets = build_networks(c, dtype=jnp.float64)
    s64 = step_lib.cast_floats(state, jnp.float64)

    def forward(params):
      variables = {"params": params, "batch_stats": s64.student.batch_stats}
      outs = [nets.student.apply(variables, jnp.asarray(v), train=True, mutable=["batch_stats"])[0] for v in (v1, v2)]
      return [o["predictions"][simsiam.HEAD] for o in outs] + [o["projection"] for o in outs]

    ours, vjp = jax.vjp(forward, s64.student.params)
  assert set(r.outputs) == {"student"} and r.loss.dtype == jnp.float64
  for a, b in zip(
    ours,
    [
      r.outputs["student"][0]["predictions"][simsiam.HEAD],
      r.outputs["student"][1]["predictions"][simsiam.HEAD],
      r.outputs["student"][0]["projection"],
      r.outputs["student"][1]["projection"],
    ],
  ):
    # The outputs the step returns are the forward's (its compiled fusions differ: float64 rounding apart).
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)
  p1, p2, z1, z2 = torch_leaves(*ours)
  loss = official_loss(p1, p2, z1, z2)
  loss.backward()
  assert float(r.loss) == pytest.approx(loss.item(), rel=1e-12, abs=1e-15)
  assert z1.grad is None and z2.grad is None  # stop-gradient: the official loss never reaches z
  # The parameters' gradient: the official loss's gradient carried back through the same network.
  with jax.enable_x64(True):
    (expected,) = vjp([jnp.asarray(t.grad.numpy()) for t in (p1, p2)] + [jnp.zeros_like(ours[2])] * 2)
  for a, b in zip(jax.tree.leaves(r.grads["student"]), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
  # SGD from zero momentum: θ - lr (g + wd θ); the predictor at the fixed peak, the rest on the schedule.
  peak, start = c.optim.base_lr * c.train.batch_size / 256, c.optim.warmup_init_lr
  assert start != peak
  for name, lr in (("predictor_simsiam", peak), ("encoder", start), ("projector", start)):
    old, grad, new = (
      jax.tree.leaves(t[name]) for t in (s64.student.params, r.grads["student"], r.state.student.params)
    )
    for w, g, w_new in zip(old, grad, new):
      w, g = np.asarray(w), np.asarray(g)
      np.testing.assert_allclose(np.asarray(w_new), w - lr * (g + 1e-4 * w), rtol=1e-12, atol=1e-15)
  # No EMA: the student's EMA partner is not moved.
  for a, b in zip(jax.tree.leaves(r.state.student.ema_params), jax.tree.leaves(s64.student.ema_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def teacher_config(views):
  c = tiny_config("simdis_on", "byol")
  c.views = views
  c.teacher.method = "simsiam"
  c.model.teacher.hidden_dim, c.model.teacher.proj_dim = 32, 16
  c.simsiam.predictor_dim = 8
  return c


def test_a_simsiam_teacher_takes_only_the_views_an_ema_free_teacher_has():
  with pytest.raises(ValueError, match=r"teacher.method='simsiam' has no EMA teacher, so the T̂ views \['tema_dv'\]"):
    configuration.validate(teacher_config(("sema_dv", "tema_dv")))
  off = teacher_config(("sema_dv", "t_dv"))
  off.method = "simdis_off"
  with pytest.raises(ValueError, match=r"restores a finished BYOL run: set --config.teacher.method=byol"):
    configuration.validate(off)
  configuration.validate(teacher_config(("sema_dv", "t_sv", "t_dv", "s_dv", "sema_sv")))


def test_simdis_on_with_a_simsiam_teacher_adds_its_loss_and_moves_no_teacher_ema():
  c = configuration.validate(teacher_config(("sema_dv", "t_dv")))
  rng = np.random.default_rng(1)
  v1, v2 = rng.normal(size=(2, BATCH) + run_helpers.IMAGE_SHAPE)
  state = run_helpers.fresh_state(c)
  assert "predictor_simsiam" in state.teacher.params and "dense3" in state.teacher.params["projector"]
  with jax.enable_x64(True):
    r = step_lib.research_step(c, state, jnp.asarray(v1), jnp.asarray(v2), total_steps=10, outputs=True)
  assert set(r.outputs) == {"student", "student_ema", "teacher"}  # no T̂ forward
  t = r.outputs["teacher"]
  p1, p2, z1, z2 = torch_leaves(
    *(t[i]["predictions"][simsiam.HEAD] for i in (0, 1)), *(t[i]["projection"] for i in (0, 1))
  )
  assert float(r.metrics["loss_teacher"]) == pytest.approx(official_loss(p1, p2, z1, z2).item(), rel=1e-12)
  assert float(r.loss) == pytest.approx(float(r.metrics["loss_student"] + r.metrics["loss_teacher"]), rel=1e-12)
  assert set(r.grads) == {"student", "teacher"}
  for a, b in zip(jax.tree.leaves(r.state.teacher.ema_params), jax.tree.leaves(state.teacher.ema_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b, np.float64))


def test_the_fashion_mnist_preset_is_valid():
  c = configuration.validate(run_helpers.shipped_config("configs/fashion_mnist/simsiam.py"))
  assert c.method == "simsiam" and c.optim.name == "sgd" and c.simsiam.fixed_predictor_lr
  c = configuration.validate(run_helpers.shipped_config("configs/fashion_mnist/simsiam.py:teacher"))
  assert c.method == "simdis_on" and c.teacher.method == "simsiam" and "tema_dv" not in c.views
