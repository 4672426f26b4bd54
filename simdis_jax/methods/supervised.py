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
import optax

from simdis_jax.methods.interface import Forward
from simdis_jax.methods.simdis import after_update, before_update

METHODS = ("supervised",)

# The EMA copy of the student follows the SimDis rule exactly as for BYOL: the method's
# extra state updates are methods/simdis.py's before_update / after_update (imported above).
__all__ = ["METHODS", "online_networks", "forwards", "loss", "before_update", "after_update"]


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
