"""The SimDis method: target views, predictor heads, losses and the EMA rule.

Read this module beside SPEC.md; each block names the section it implements.
Notation: v, v' are the two augmented views of an image; S / T the online
student / teacher; Ŝ / T̂ their EMA ("target") networks.
"""

import math
from typing import Dict, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp

# --- The seven target views (SPEC.md "Two augmented views, seven targets") ---
# head name (the authors' names) -> (network whose projection is the target,
# whether the prediction of v targets that network's projection of v itself).
VIEWS: Dict[str, Tuple[str, bool]] = {
    "s_dv": ("student", False),         # S-v'  online student, other view
    "sema_sv": ("student_ema", True),   # Ŝ-v   EMA student, same view
    "sema_dv": ("student_ema", False),  # Ŝ-v'  EMA student, other view (= BYOL)
    "t_sv": ("teacher", True),          # T-v   online teacher, same view
    "t_dv": ("teacher", False),         # T-v'  online teacher, other view
    "tema_sv": ("teacher_ema", True),   # T̂-v   EMA teacher, same view
    "tema_dv": ("teacher_ema", False),  # T̂-v'  EMA teacher, other view
}
from simdis_jax.labels import VIEW_NAMES as PAPER_NAMES  # noqa: E402  (the paper's view names)
# BYOL's own term; also the name of the teacher's single predictor head, so that
# a finished BYOL run's student restores directly as a SimDis teacher.
BYOL_HEAD = "sema_dv"
# supervised: the student alone with cross-entropy on labels (same views, augmentations and optimizer),
# the upper reference of the small-scale study; config.views is not used.
METHODS = ("byol", "simdis_off", "simdis_on", "supervised")
HEAD_COMBINATIONS = ("mean", "sum")


def check_views(views: Sequence[str]) -> Tuple[str, ...]:
  """Returns the views as a tuple, or raises a ValueError naming the valid ones."""
  views = tuple(views)
  unknown = [v for v in views if v not in VIEWS]
  if unknown:
    valid = ", ".join(f"{name} ({PAPER_NAMES[name]})" for name in VIEWS)
    raise ValueError(f"Unknown target view(s) {unknown} in config.views; valid views are: {valid}.")
  if not views:
    raise ValueError(f"config.views is empty; choose at least one of {list(VIEWS)}.")
  if len(set(views)) != len(views):
    raise ValueError(f"config.views lists a view twice: {list(views)}.")
  return views


def target_networks(views: Sequence[str], method: str) -> Tuple[str, ...]:
  """The networks whose projections the selected views (and the teacher's BYOL term) need."""
  needed = {VIEWS[v][0] for v in views}
  if method == "simdis_on":
    needed |= {"teacher", "teacher_ema"}  # the teacher trains with its own BYOL loss
  return tuple(n for n in ("student", "student_ema", "teacher", "teacher_ema") if n in needed)


# --- Losses (SPEC.md "Losses") ---

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


# --- EMA (SPEC.md "EMA") ---

def ema_decay(step, total_steps: int, base: float):
  """τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2, k counted from 0."""
  progress = jnp.asarray(step, jnp.float32) / float(max(total_steps, 1))
  return 1.0 - (1.0 - base) * (jnp.cos(math.pi * progress) + 1.0) / 2.0


def ema_update(ema_params, online_params, tau):
  """ξ ← τ ξ + (1 − τ) θ over the EMA tree (encoder + projector); extra online leaves are ignored."""
  online_subset = {k: online_params[k] for k in ema_params}
  return jax.tree.map(lambda e, o: tau * e + (1.0 - tau) * o, ema_params, online_subset)
