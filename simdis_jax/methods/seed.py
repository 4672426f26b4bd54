"""SEED (jacobswan1/SEED) on the method interface: a frozen teacher's similarity distribution over a queue.

Read beside docs/spec.md "SEED". ONE view (view 0) goes through the student and the
frozen teacher. The teacher is a finished BYOL run's student (config.teacher.workdir,
restored as SimDis-Off restores it: train.load_offline_teacher), run in EVAL mode
(its running BN statistics); its signal is its projector output, L2-normalised.
The student's head is Linear(d,d) -> ReLU -> Linear(d, dim) without BN
(config.model.student.projector="moco") with dim = the teacher's projector output
(model.teacher.proj_dim, checked by the config). The queue (TrainState.method_state) holds
teacher embeddings; the loss uses it before this step's enqueue, then the global
batch's teacher embeddings are enqueued FIFO, as in MoCo. The student's EMA partner
exists (every online network has one) but SEED never reads nor moves it.
"""

from typing import Dict, Mapping, Tuple

import jax
import jax.numpy as jnp

import ml_collections

from simdis_jax.methods import common
from simdis_jax.methods.common import BYOL_PREDICTOR as BYOL_HEAD, enqueue_global, l2_normalize
from simdis_jax.methods.interface import About, Forward

ABOUT = {"seed": About("SEED", 5, teacher="offline", targets="one view; teacher similarities (queue)")}
METHODS = tuple(ABOUT)


def defaults(c) -> None:
  """config.seed_distill (docs/spec.md "SEED"): the frozen teacher is a finished BYOL run (teacher.workdir)."""
  c.seed_distill = ml_collections.ConfigDict()
  c.seed_distill.student_temperature = 0.2
  c.seed_distill.teacher_temperature = 1e-4
  c.seed_distill.queue_size = 65_536  # teacher embeddings; a multiple of train.batch_size


RULES = (
  dict(key="seed_distill.student_temperature", above=0.0, hint="SEED uses 0.2"),
  dict(key="seed_distill.teacher_temperature", above=0.0, hint="SEED's code default is 1e-4"),
  dict(key="seed_distill.queue_size", low=1, whole=True, hint="SEED uses 65,536"),
)


def validate(config) -> None:
  """The queue against the batch; the student's head outputs the teacher's dimension."""
  common.check_queue_size(config, "seed_distill.queue_size")
  if config.model.student.proj_dim != config.model.teacher.proj_dim:
    raise ValueError(
      f"method {config.method!r}: the student's head must output the teacher's dimension; set "
      f"--config.model.student.proj_dim={config.model.teacher.proj_dim} (model.teacher.proj_dim)."
    )


def online_networks(config) -> Dict[str, Dict]:
  """The student with its SEED head; the teacher built as SimDis-Off's (a BYOL student, predictor included)."""
  del config
  # The teacher keeps the BYOL predictor in its tree so that the BYOL run's student restores into it unchanged.
  return {"student": {}, "teacher": {"heads": (BYOL_HEAD,)}}


def forwards(config) -> Tuple[Forward, ...]:
  """View 0 through the student (trains, batch statistics) and the frozen teacher (eval mode)."""
  del config
  return (
    Forward("student", trainable=True, bn="train", update_stats=True, views=(0,)),
    Forward("teacher", trainable=False, bn="eval", update_stats=False, views=(0,)),
  )


def init_method_state(config, rng) -> Dict[str, jnp.ndarray]:
  """K random unit rows of the teacher's projection dimension, pointer 0 (SEED's builder)."""
  return {
    "queue": common.init_queue(rng, config.seed_distill.queue_size, config.model.teacher.proj_dim),
    "ptr": jnp.zeros([], jnp.int32),
  }


def student_and_teacher(outputs) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """L2-normalised student embedding and teacher embedding (no gradient) of this device's view."""
  s = l2_normalize(outputs["student"][0]["projection"])
  t = jax.lax.stop_gradient(l2_normalize(outputs["teacher"][0]["projection"]))
  return s, t


def loss(outputs: Mapping[str, Tuple[Dict, ...]], labels, state, config) -> Tuple[jnp.ndarray, Dict]:
  """Soft cross-entropy of the student's over the teacher's distribution on [own t ∪ queue]; its logits."""
  del labels
  s, t = student_and_teacher(outputs)
  queue = state.method_state["queue"]
  value, logits = common.seed_loss(
    s.astype(queue.dtype),
    t.astype(queue.dtype),
    queue,
    config.seed_distill.student_temperature,
    config.seed_distill.teacher_temperature,
  )
  accuracy = 100.0 * jnp.mean(jnp.argmax(logits, -1) == 0)  # the student ranks its own teacher embedding first
  return value, {"loss_student": value, "contrast_top1": accuracy, "logits": logits}


def before_update(state, config, total_steps: int):
  """Nothing to do before the forwards: the teacher is frozen and SEED has no momentum encoder."""
  del config, total_steps
  return state, {}


def after_update(state, outputs, config, total_steps: int):
  """Enqueues the global batch's teacher embeddings (after the loss, as SEED's builder)."""
  del config, total_steps
  return enqueue_global(state, student_and_teacher(outputs)[1])
