"""MoCo-v2 (facebookresearch/moco) on the method interface: the student alone, a momentum key encoder, a queue.

Read beside docs/spec.md "MoCo-v2". The query encoder is the online student; the key
encoder is its EMA partner ("student_ema"), a copy at init (model.ema_init="copy")
moved by momentum m = config.moco.momentum at the START of every step, before the
keys (before_update); it never receives gradient. Both carry MoCo's head
(config.model.student.projector="moco": Linear(d,d) -> ReLU -> Linear(d,128), no BN).
One InfoNCE term per image: crop 1 (view 0) is the query, crop 2 (view 1) the key;
not symmetric. The queue of config.moco.queue_size keys lives in TrainState.method_state;
after the loss the keys of the whole global batch (gathered over the data axis, in
device = rank order, across hosts) overwrite rows [ptr, ptr + B). The queue and its pointer
are the method's extra state, TrainState.method_state = {"queue", "ptr"}.

Shuffle BN (config.moco.shuffle_bn, with model.sync_bn=False): the key encoder runs
on its device's chunk of one random permutation of the global batch (a new one each
step, the same on every device), in train mode with per-device statistics, and its
keys are put back in the original order. On ONE device this is a no-op: BN over the
whole (permuted) batch gives the same statistics, so the keys equal those of an
unshuffled pass up to the summation order (it would matter only with ghost BN, i.e.
statistics per sub-batch, which this project does not implement). The alternative is
SyncBN (model.sync_bn=True, moco.shuffle_bn=False): both encoders normalise over the
global batch, so no example's key sees statistics of its own device's queries only.
"""

from typing import Dict, Mapping, Tuple

import jax
import jax.numpy as jnp

import ml_collections

from simdis_jax.methods import common
from simdis_jax.methods.common import enqueue_global, l2_normalize
from simdis_jax.methods.interface import About, Forward

ABOUT = {"moco_v2": About("MoCo-v2", 4, targets="query v, key v' (queue)")}
METHODS = tuple(ABOUT)


def defaults(c) -> None:
  """config.moco (docs/spec.md "MoCo-v2"): the key encoder is the student's EMA partner."""
  c.moco = ml_collections.ConfigDict()
  c.moco.momentum = 0.999  # key encoder: θ_k <- m θ_k + (1 - m) θ_q at the start of every step
  c.moco.temperature = 0.2
  c.moco.queue_size = 65_536  # negatives; a multiple of train.batch_size
  c.moco.shuffle_bn = True  # key encoder on a permutation of the global batch (needs model.sync_bn=False)


RULES = (
  dict(key="moco.momentum", low=0.0, high=1.0, hint="MoCo uses 0.999"),
  dict(key="moco.temperature", above=0.0, hint="MoCo-v2 uses 0.2"),
  dict(key="moco.queue_size", low=1, whole=True, hint="MoCo uses 65,536"),
)


def validate(config) -> None:
  """The queue against the batch; shuffle BN against SyncBN; the key encoder starts as a copy."""
  common.check_queue_size(config, "moco.queue_size")
  if config.moco.shuffle_bn and config.model.sync_bn:
    raise ValueError(
      "config.moco.shuffle_bn=True needs per-device BN (--config.model.sync_bn=False); with "
      "SyncBN every device sees the global statistics and a shuffle changes nothing. Choose one."
    )
  if config.model.ema_init != "copy":
    raise ValueError(
      f"method {config.method!r} starts the key encoder as a copy of the query encoder: set "
      "--config.model.ema_init=copy."
    )


def online_networks(config) -> Dict[str, Dict]:
  """The query encoder (student) with its projection head and no predictors; its EMA partner is the key encoder."""
  del config
  return {"student": {}}


def forwards(config) -> Tuple[Forward, ...]:
  """Query: the student on view 0 (trains, batch statistics); key: its EMA on view 1 (frozen, own statistics)."""
  return (
    Forward("student", trainable=True, bn="train", update_stats=True, views=(0,)),
    Forward(
      "student_ema", trainable=False, bn="train", update_stats=True, views=(1,), shuffle=bool(config.moco.shuffle_bn)
    ),
  )


def init_method_state(config, rng) -> Dict[str, jnp.ndarray]:
  """K random unit rows of the projection's dimension, pointer 0 (both reference codes)."""
  return {
    "queue": common.init_queue(rng, config.moco.queue_size, config.model.student.proj_dim),
    "ptr": jnp.zeros([], jnp.int32),
  }


def query_and_key(outputs) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """L2-normalised query (student, view 0) and key (key encoder, view 1; no gradient) of this device."""
  q = l2_normalize(outputs["student"][0]["projection"])
  k = jax.lax.stop_gradient(l2_normalize(outputs["student_ema"][0]["projection"]))
  return q, k


def loss(outputs: Mapping[str, Tuple[Dict, ...]], labels, state, config) -> Tuple[jnp.ndarray, Dict]:
  """InfoNCE over [q·k, q·queue] / T against the queue BEFORE this step's enqueue; also its logits."""
  del labels
  q, k = query_and_key(outputs)
  q = q.astype(state.method_state["queue"].dtype)
  value, logits = common.info_nce(q, k.astype(q.dtype), state.method_state["queue"], config.moco.temperature)
  accuracy = 100.0 * jnp.mean(jnp.argmax(logits, -1) == 0)  # MoCo's "Acc@1": the positive key ranks first
  return value, {"loss_student": value, "contrast_top1": accuracy, "logits": logits}


def before_update(state, config, total_steps: int):
  """θ_k ← m·θ_k + (1 − m)·θ_q over the key encoder's parameters, before the keys are computed."""
  del total_steps
  key_params = common.momentum_update(state.student.ema_params, state.student.params, config.moco.momentum)
  return state.replace(student=state.student.replace(ema_params=key_params)), {}


def after_update(state, outputs, config, total_steps: int):
  """Enqueues the global batch's keys (after the loss and the update, as MoCo's _dequeue_and_enqueue)."""
  del config, total_steps
  return enqueue_global(state, query_and_key(outputs)[1])
