"""BYOL and SimDis: the seven target views, the networks and their BN modes, the losses and the EMA rule.

Read this module beside docs/spec.md; each block names the section it implements.
Notation: v, v' are the two augmented views of an image; S / T the online
student / teacher; Ŝ / T̂ their EMA ("target") networks. BYOL is SimDis with
no teacher and the one view Ŝ-v'. The functions the step calls are those of
methods/interface.py: online_networks, forwards, loss, before_update, after_update.
SimDis-On's teacher trains by config.teacher.method: BYOL (this module's teacher_role, the
paper's) or another method with a teacher role (SimCLR, SimSiam), found through the registry.
"""

from typing import Dict, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp

from simdis_jax.methods.common import BYOL_PREDICTOR, apply_ema, l2_normalize, step_decay
from simdis_jax.methods.common import ema_decay, ema_update  # noqa: F401  (the EMA rule, read here beside the losses)
from simdis_jax.methods.interface import About, Forward, TeacherRole

# --- The seven target views (docs/spec.md "Two augmented views, seven targets") ---
# head name (the authors' names) -> (network whose projection is the target,
# whether the prediction of v targets that network's projection of v itself).
VIEWS: Dict[str, Tuple[str, bool]] = {
  "s_dv": ("student", False),  # S-v'  online student, other view
  "sema_sv": ("student_ema", True),  # Ŝ-v   EMA student, same view
  "sema_dv": ("student_ema", False),  # Ŝ-v'  EMA student, other view (= BYOL)
  "t_sv": ("teacher", True),  # T-v   online teacher, same view
  "t_dv": ("teacher", False),  # T-v'  online teacher, other view
  "tema_sv": ("teacher_ema", True),  # T̂-v   EMA teacher, same view
  "tema_dv": ("teacher_ema", False),  # T̂-v'  EMA teacher, other view
}
# The paper's names of the seven target views (docs/spec.md "Target views"; paper Table 2), shared with
# the report through the registry (methods.VIEW_NAMES, simdis_jax/labels.py).
VIEW_NAMES = {
  "s_dv": "S-v'",
  "sema_sv": "Ŝ-v",
  "sema_dv": "Ŝ-v'",
  "t_sv": "T-v",
  "t_dv": "T-v'",
  "tema_sv": "T̂-v",
  "tema_dv": "T̂-v'",
}
PAPER_NAMES = VIEW_NAMES
# Presets of the student's target views (docs/spec.md "Presets", paper Table 2); configuration.VIEW_PRESETS.
VIEW_PRESETS = {
  "byol": ("sema_dv",),
  "simdis_2v": ("sema_dv", "tema_dv"),
  "simdis_7v": tuple(VIEWS),
  # Table 2 rows (the student's own BYOL view plus the listed teacher views).
  "table2_t_sv": ("sema_dv", "t_sv"),
  "table2_t_dv": ("sema_dv", "t_dv"),
  "table2_tema_sv": ("sema_dv", "tema_sv"),
  "table2_tema_dv": ("sema_dv", "tema_dv"),
  "table2_t_sv_t_dv": ("sema_dv", "t_sv", "t_dv"),
  "table2_tema_sv_tema_dv": ("sema_dv", "tema_sv", "tema_dv"),
  "table2_all_teacher": ("sema_dv", "t_sv", "t_dv", "tema_sv", "tema_dv"),
  "table2_7v": tuple(VIEWS),
}
# BYOL's own term; also the name of the teacher's single predictor head, so that
# a finished BYOL run's student restores directly as a SimDis teacher.
BYOL_HEAD = BYOL_PREDICTOR
# The config.method values this module implements (methods/interface.py About).
ABOUT = {
  "byol": About("BYOL", 0, uses_views=True, teacher_source=True),
  "simdis_off": About("SimDis-Off", 1, teacher="offline", uses_views=True),
  "simdis_on": About("SimDis-On", 2, teacher="online", uses_views=True),
}
METHODS = tuple(ABOUT)
DEFAULT_METHOD = "simdis_on"  # the base config's: the paper's ImageNet SimDis-On-7v standard setting
HEAD_COMBINATIONS = ("mean", "sum")


# --- Config section, its rules (methods/interface.py) ---


def defaults(c) -> None:
  """The student's target views, how its heads combine, and the method an online teacher trains by."""
  c.views = VIEW_PRESETS["simdis_7v"]
  c.head_combination = "mean"  # mean over heads (authors) | sum
  c.teacher.method = "byol"  # simdis_on: the online teacher's own objective (a method with a teacher role)


RULES = (dict(key="head_combination", choices=HEAD_COMBINATIONS),)


def _registry():
  from simdis_jax import methods  # pylint: disable=import-outside-toplevel  (the registry imports this module)

  return methods


def validate(config) -> None:
  """The views exist; BYOL has no teacher views; the teacher's method exists and has the targets asked for."""
  config.views = check_views(config.views)
  teacher_views = [v for v in config.views if VIEWS[v][0].startswith("teacher")]
  if ABOUT[config.method].teacher == "none" and teacher_views:
    raise ValueError(
      f"method {config.method!r} trains the student alone, but config.views names teacher views "
      f"{teacher_views}; use a method with a teacher, or views {VIEW_PRESETS['byol']}."
    )
  teacher_method = config.teacher.get("method", "byol")
  choices = _registry().teacher_methods()
  if teacher_method not in choices:
    raise ValueError(f"config.teacher.method={teacher_method!r} cannot train a teacher; choose one of {choices}.")
  if teacher_method != "byol" and ABOUT[config.method].teacher == "offline":
    raise ValueError(
      f"config.teacher.method={teacher_method!r} trains an online teacher; method "
      f"{config.method!r} restores a finished BYOL run: set --config.teacher.method=byol."
    )
  if ABOUT[config.method].teacher == "online" and not _registry().teacher_role(config).ema:
    ema_views = [v for v in config.views if VIEWS[v][0] == "teacher_ema"]
    if ema_views:
      raise ValueError(
        f"config.teacher.method={teacher_method!r} has no EMA teacher, so the T̂ views {ema_views} "
        "have no target: use the online teacher's views (t_sv, t_dv) and the student's "
        "(s_dv, sema_sv, sema_dv)."
      )


def describe_targets(config) -> str:
  """The target views in the paper's notation."""
  views = config.get("views") or ()
  return ", ".join(VIEW_NAMES.get(v, v) for v in views) if views else "—"


def describe_teacher(config) -> str:
  """What the teacher learns from: SimDis-On's by its teacher method; SimDis-Off's is frozen."""
  if ABOUT[config.get("method")].teacher == "offline":
    return "— (frozen, restored)"
  teacher_method = config.get("teacher", {}).get("method", "byol")
  if teacher_method == "byol":
    return f"{VIEW_NAMES['tema_dv']} (BYOL)"
  return _registry().about(teacher_method).label


def teacher_role(config) -> TeacherRole:
  """BYOL as the teacher's objective (the paper's SimDis-On): its predictor regresses T̂ of the other view."""
  del config
  return TeacherRole(
    heads={"heads": (BYOL_HEAD,)},
    ema=True,
    loss=lambda outs, ema_projections, cfg: teacher_byol_loss(
      (outs[0]["predictions"][BYOL_HEAD], outs[1]["predictions"][BYOL_HEAD]), ema_projections
    ),
  )


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


def target_networks(views: Sequence[str], method: str, teacher_ema: bool = True) -> Tuple[str, ...]:
  """The networks whose projections the selected views (and the online teacher's own term) need.

  teacher_ema: whether the online teacher's method has an EMA network (BYOL's T̂) that its term reads.
  """
  needed = {VIEWS[v][0] for v in views}
  if ABOUT[method].teacher == "online":
    needed |= {"teacher", "teacher_ema"} if teacher_ema else {"teacher"}  # its own term
  return tuple(n for n in ("student", "student_ema", "teacher", "teacher_ema") if n in needed)


# --- Which networks run, and how (docs/spec.md "Networks", "Two augmented views, seven targets", "Losses") ---


def teacher_trains(config) -> bool:
  """SimDis-On trains the teacher beside the student (one optimizer); SimDis-Off's teacher is frozen."""
  return ABOUT[config.method].teacher == "online"


def _teacher_role(config) -> TeacherRole:
  """The online teacher's role (config.teacher.method; BYOL's is this module's own)."""
  method = config.teacher.get("method", "byol")
  return teacher_role(config) if method == "byol" else _registry().get(method).teacher_role(config)


def online_networks(config) -> Dict[str, Dict]:
  """The student with ONE PREDICTOR PER TARGET VIEW; SimDis's teacher with its BYOL predictor only (SimDis-On:
  the heads its teacher method asks for)."""
  networks = {"student": {"heads": tuple(config.views)}}
  if teacher_trains(config):
    networks["teacher"] = dict(_teacher_role(config).heads)
  elif ABOUT[config.method].teacher != "none":
    networks["teacher"] = {"heads": (BYOL_HEAD,)}
  return networks


def forwards(config) -> Tuple[Forward, ...]:
  """The student, and every network whose projection a selected view (or the teacher's own term) needs."""
  online = teacher_trains(config)
  needed = target_networks(config.views, config.method, not online or _teacher_role(config).ema)
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


def regression_loss(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """Per-example ||p̄ - z̄||² = 2 - 2 cos(p, z); the target gets stop-gradient."""
  p = l2_normalize(prediction)
  z = jax.lax.stop_gradient(l2_normalize(target))
  return jnp.sum(jnp.square(p - z), axis=-1)


def head_loss(
  pred_v: jnp.ndarray, pred_v2: jnp.ndarray, target_v: jnp.ndarray, target_v2: jnp.ndarray, same_view: bool
) -> jnp.ndarray:
  """One head's symmetric term: the two halves SUMMED, each averaged over the batch (range [0, 8])."""
  if same_view:
    return jnp.mean(regression_loss(pred_v, target_v)) + jnp.mean(regression_loss(pred_v2, target_v2))
  return jnp.mean(regression_loss(pred_v, target_v2)) + jnp.mean(regression_loss(pred_v2, target_v))


def student_loss(
  predictions: Mapping[str, Tuple[jnp.ndarray, jnp.ndarray]],
  targets: Mapping[str, Tuple[jnp.ndarray, jnp.ndarray]],
  views: Sequence[str],
  combination: str = "mean",
) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
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


def teacher_byol_loss(
  teacher_predictions: Tuple[jnp.ndarray, jnp.ndarray], teacher_ema_projections: Tuple[jnp.ndarray, jnp.ndarray]
) -> jnp.ndarray:
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
  targets = jax.lax.stop_gradient({name: (out[0]["projection"], out[1]["projection"]) for name, out in outputs.items()})
  s1, s2 = outputs["student"]
  predictions = {h: (s1["predictions"][h], s2["predictions"][h]) for h in views}
  loss_student, per_head = student_loss(predictions, targets, views, config.head_combination)
  metrics = {"loss_student": loss_student}
  metrics.update({f"loss_head/{h}": v for h, v in per_head.items()})
  total = loss_student
  if teacher_trains(config):
    # SimDis-On: total = student loss + the teacher's own loss (weight 1); with BYOL's, about 8 at initialisation.
    metrics["loss_teacher"] = _teacher_role(config).loss(outputs["teacher"], targets.get("teacher_ema"), config)
    total = total + metrics["loss_teacher"]
  return total, metrics


# --- EMA (docs/spec.md "EMA"; the rule itself is methods/common.py's) ---


def teacher_has_ema(config) -> bool:
  """Whether the teacher's EMA moves: an online teacher whose method has one (BYOL's T̂)."""
  return teacher_trains(config) and _teacher_role(config).ema


def before_update(state, config, total_steps: int):
  """ema.timing="before" (authors): the EMA at the start of the step, with the pre-update online weights."""
  tau = step_decay(state, config, total_steps)
  if config.ema.timing == "before":
    state = apply_ema(state, tau, teacher_has_ema(config))
  return state, {"tau": tau}


def after_update(state, outputs, config, total_steps: int):
  """ema.timing="after" (DeepMind): the EMA after the optimizer step, with the new online weights.

  `state` holds the updated weights; state.step still counts the steps before this one.
  """
  del outputs
  if config.ema.timing == "after":
    state = apply_ema(state, step_decay(state, config, total_steps), teacher_has_ema(config))
  return state
