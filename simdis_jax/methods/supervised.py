"""Supervised training: the student alone, softmax cross-entropy of a linear classifier on labels.

The upper reference of the small-scale study: the same two views, augmentations,
BN mode and optimizer as the self-supervised students; config.views is not used.
The standard recipe (configs/imagenet/supervised_r18.py, Figure 3's upper bound)
is the same method with config.supervised.views=1 (one crop per image per step),
random-resized-crop + flip only, SGD and step decay: methods/recipes.py.
The student's EMA copy follows the SimDis EMA rule, so that its evaluations read the
same networks as the other methods'.
"""

from typing import Dict, Mapping, Tuple

import jax.numpy as jnp
import ml_collections
import optax

from simdis_jax.methods.common import apply_ema, step_decay
from simdis_jax.methods.interface import About, Forward

ABOUT = {"supervised": About("Supervised", 3, needs_labels=True, targets="labels")}
METHODS = tuple(ABOUT)


def defaults(c) -> None:
  """config.supervised: how many views per image a step trains on."""
  c.supervised = ml_collections.ConfigDict()
  c.supervised.views = 2  # method=supervised: 2 = both views, losses averaged | 1 = one crop (torchvision's)


RULES = (
  dict(key="supervised.views", choices=(1, 2), hint="1 = one crop per image (the torchvision recipe), 2 = both views"),
)


def describe_targets(config) -> str:
  """'labels', and the views per image when the run says."""
  views = config.get("supervised", {}).get("views", 0)
  return "labels" + (f", {views} view{'s' if views > 1 else ''}" if views else "")


# The EMA copy of the student follows the SimDis rule exactly as for BYOL (methods/common.py's), without a teacher.


def before_update(state, config, total_steps: int):
  """ema.timing="before" (authors): the student's EMA at the start of the step."""
  tau = step_decay(state, config, total_steps)
  if config.ema.timing == "before":
    state = apply_ema(state, tau, False)
  return state, {"tau": tau}


def after_update(state, outputs, config, total_steps: int):
  """ema.timing="after" (DeepMind): the student's EMA after the optimizer step."""
  del outputs
  if config.ema.timing == "after":
    state = apply_ema(state, step_decay(state, config, total_steps), False)
  return state


def online_networks(config) -> Dict[str, Dict]:
  """The student with a classifier of config.probe.num_classes outputs instead of predictors."""
  return {"student": {"num_classes": config.probe.num_classes}}


def forwards(config) -> Tuple[Forward, ...]:
  """The student on both views (config.supervised.views=2), or on view 0 alone (1: the torchvision recipe)."""
  views = (0,) if config.get("supervised", {}).get("views", 2) == 1 else (0, 1)
  return (Forward("student", trainable=True, bn="train", update_stats=True, views=views),)


def loss(outputs: Mapping[str, Tuple[Dict, Dict]], labels, state, config) -> Tuple[jnp.ndarray, Dict]:
  """Cross-entropy on each view it saw, averaged; examples with a negative label (unlabelled) are left out."""
  del state, config
  labelled = labels >= 0
  safe = jnp.where(labelled, labels, 0)
  count = jnp.maximum(jnp.sum(labelled), 1)
  losses, correct = [], 0
  for out in outputs["student"]:
    ce = optax.softmax_cross_entropy_with_integer_labels(out["logits"], safe)
    losses.append(jnp.sum(ce * labelled) / count)
    correct = correct + jnp.sum((jnp.argmax(out["logits"], -1) == safe) & labelled)
  total = sum(losses) / len(losses)
  return total, {"loss_student": total, "train_top1": 100.0 * correct / (len(losses) * count)}
