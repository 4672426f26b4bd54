"""BYOL and SimDis: the seven target views, the networks and their BN modes, the losses and the EMA rule.

Read this module beside docs/spec.md; each block names the section it implements.
Notation: v, v' are the two augmented views of an image; S / T the online
student / teacher; Ŝ / T̂ their EMA ("target") networks. BYOL is SimDis with
no teacher and the one view Ŝ-v'. The functions the step calls are those of
methods/interface.py: online_networks, forwards, loss, before_update, after_update.
"""

import math
from typing import Dict, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp

from simdis_jax.methods.interface import Forward
from simdis_jax.methods.target_views import (BYOL_HEAD, HEAD_COMBINATIONS, PAPER_NAMES,  # noqa: F401
                                             VIEWS, check_views)

# The seven target views (docs/spec.md "Two augmented views, seven targets") are data: methods/target_views.py.
# The config.method values this module implements.
METHODS = ("byol", "simdis_off", "simdis_on")


def target_networks(views: Sequence[str], method: str) -> Tuple[str, ...]:
  """The networks whose projections the selected views (and the teacher's BYOL term) need."""
  needed = {VIEWS[v][0] for v in views}
  if method == "simdis_on":
    needed |= {"teacher", "teacher_ema"}  # the teacher trains with its own BYOL loss
  return tuple(n for n in ("student", "student_ema", "teacher", "teacher_ema") if n in needed)


# --- Which networks run, and how (docs/spec.md "Networks", "Two augmented views, seven targets", "Losses") ---

def teacher_trains(config) -> bool:
  """SimDis-On trains the teacher beside the student (one optimizer); SimDis-Off's teacher is frozen."""
  return config.method == "simdis_on"


def online_networks(config) -> Dict[str, Dict]:
  """The student with ONE PREDICTOR PER TARGET VIEW; SimDis's teacher with its BYOL predictor only."""
  networks = {"student": {"heads": tuple(config.views)}}
  if config.method != "byol":
    networks["teacher"] = {"heads": (BYOL_HEAD,)}
  return networks


def forwards(config) -> Tuple[Forward, ...]:
  """The student, and every network whose projection a selected view (or the teacher's BYOL term) needs."""
  online = teacher_trains(config)
  needed = target_networks(config.views, config.method)
  # The student makes every prediction (and the S-v' target); it trains with batch statistics.
  runs = [Forward("student", trainable=True, bn="train", update_stats=True)]
  if "student_ema" in needed:
    # EMA nets run with batch statistics too, as BYOL does, and keep running statistics of their own.
    runs.append(Forward("student_ema", trainable=False, bn="train", update_stats=True))
  # SimDis-Off: the restored teacher and its EMA are frozen and keep their running statistics; their
  # BN mode is config.teacher.bn_mode (authors: train = batch statistics; eval = running statistics).
  teacher_bn = "train" if online or config.teacher.bn_mode == "train" else "eval"
  if "teacher" in needed:
    runs.append(Forward("teacher", trainable=online, bn=teacher_bn, update_stats=online))
  if "teacher_ema" in needed:
    runs.append(Forward("teacher_ema", trainable=False, bn=teacher_bn, update_stats=online))
  return tuple(runs)


# --- Losses (docs/spec.md "Losses") ---

def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """x / max(||x||, eps) along the last axis, as torch.nn.functional.normalize."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def regression_loss(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """Per-example ||p̄ - z̄||² = 2 - 2 cos(p, z); the target gets stop-gradient."""
  p = l2_normalize(prediction)
  z = jax.lax.stop_gradient(l2_normalize(target))
  return jnp.sum(jnp.square(p - z), axis=-1)


def head_loss(pred_v: jnp.ndarray, pred_v2: jnp.ndarray, target_v: jnp.ndarray, target_v2: jnp.ndarray,
              same_view: bool) -> jnp.ndarray:
  """One head's symmetric term: the two halves SUMMED, each averaged over the batch (range [0, 8])."""
  if same_view:
    return jnp.mean(regression_loss(pred_v, target_v)) + jnp.mean(regression_loss(pred_v2, target_v2))
  return jnp.mean(regression_loss(pred_v, target_v2)) + jnp.mean(regression_loss(pred_v2, target_v))


def student_loss(predictions: Mapping[str, Tuple[jnp.ndarray, jnp.ndarray]],
                 targets: Mapping[str, Tuple[jnp.ndarray, jnp.ndarray]],
                 views: Sequence[str], combination: str = "mean") -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
  """Combines the student's heads: plain mean over all heads (authors), or their sum.

  predictions[head] = (prediction of v, prediction of v') by that head;
  targets[network] = (projection of v, projection of v') by that network.
  """
  per_head = {}
  for view in views:
    network, same_view = VIEWS[view]
    per_head[view] = head_loss(*predictions[view], *targets[network], same_view=same_view)
  total = sum(per_head.values())
  if combination == "mean":
    total = total / len(views)
  elif combination != "sum":
    raise ValueError(f"Unknown head combination {combination!r}; choose one of {HEAD_COMBINATIONS}.")
  return total, per_head


def teacher_byol_loss(teacher_predictions: Tuple[jnp.ndarray, jnp.ndarray],
                      teacher_ema_projections: Tuple[jnp.ndarray, jnp.ndarray]) -> jnp.ndarray:
  """The online teacher's own BYOL term (T predicts T̂ of the other view), weight 1."""
  return head_loss(*teacher_predictions, *teacher_ema_projections, same_view=False)


def loss(outputs: Mapping[str, Tuple[Dict, Dict]], labels, state, config) -> Tuple[jnp.ndarray, Dict]:
  """Student loss over its heads, plus the online teacher's BYOL term for SimDis-On; and the per-head metrics.

  outputs[network] = (outputs of v, outputs of v') of each network that forwards(config) ran.
  """
  del labels, state  # self-supervised, and no queue
  views = tuple(config.views)
  # Every target is a projection under stop-gradient: the student never sends gradient into a
  # target network (nor into its own projection through S-v').
  targets = jax.lax.stop_gradient({name: (out[0]["projection"], out[1]["projection"])
                                   for name, out in outputs.items()})
  s1, s2 = outputs["student"]
  predictions = {h: (s1["predictions"][h], s2["predictions"][h]) for h in views}
  loss_student, per_head = student_loss(predictions, targets, views, config.head_combination)
  metrics = {"loss_student": loss_student}
  metrics.update({f"loss_head/{h}": v for h, v in per_head.items()})
  total = loss_student
  if teacher_trains(config):
    # SimDis-On: total = student loss + teacher BYOL loss (weight 1), so about 8 at initialisation.
    t1, t2 = outputs["teacher"]
    metrics["loss_teacher"] = teacher_byol_loss((t1["predictions"][BYOL_HEAD], t2["predictions"][BYOL_HEAD]),
                                                targets["teacher_ema"])
    total = total + metrics["loss_teacher"]
  return total, metrics


# --- EMA (docs/spec.md "EMA") ---
# The EMA's start (an exact copy, or a separate init: config.model.ema_init) and its BN statistics
# being its own from the start are set where the state is created (state.init_net_state).

def ema_decay(step, total_steps: int, base: float, dtype=jnp.float32):
  """τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2, k counted from 0, computed in `dtype`."""
  progress = jnp.asarray(step, dtype) / float(max(total_steps, 1))
  return 1.0 - (1.0 - base) * (jnp.cos(math.pi * progress) + 1.0) / 2.0


def ema_update(ema_params, online_params, tau):
  """ξ ← τ ξ + (1 − τ) θ over the EMA tree (encoder + projector); extra online leaves are ignored."""
  online_subset = {k: online_params[k] for k in ema_params}
  return jax.tree.map(lambda e, o: tau * e + (1.0 - tau) * o, ema_params, online_subset)


def apply_ema(state, tau, teacher: bool):
  """The EMA of the student's parameters, and of the teacher's only when it trains (`teacher`).

  Only parameters are averaged: the EMA nets' BN running statistics are their own. A frozen
  (SimDis-Off) teacher's EMA stays exactly as restored.
  """
  student = state.student.replace(ema_params=ema_update(state.student.ema_params, state.student.params, tau))
  if not teacher:
    return state.replace(student=student)
  teacher_state = state.teacher.replace(ema_params=ema_update(state.teacher.ema_params, state.teacher.params, tau))
  return state.replace(student=student, teacher=teacher_state)


def step_decay(state, config, total_steps: int):
  """τ of the step that `state` is about to take, in the parameters' dtype (float64 in a float64 step)."""
  dtype = jax.tree.leaves(state.student.ema_params)[0].dtype
  return ema_decay(state.step, total_steps, config.ema.base, dtype)


def before_update(state, config, total_steps: int):
  """ema.timing="before" (authors): the EMA at the start of the step, with the pre-update online weights."""
  tau = step_decay(state, config, total_steps)
  if config.ema.timing == "before":
    state = apply_ema(state, tau, teacher_trains(config))
  return state, {"tau": tau}


def after_update(state, outputs, config, total_steps: int):
  """ema.timing="after" (DeepMind): the EMA after the optimizer step, with the new online weights.

  `state` holds the updated weights; state.step still counts the steps before this one.
  """
  del outputs
  if config.ema.timing == "after":
    state = apply_ema(state, step_decay(state, config, total_steps), teacher_trains(config))
  return state
