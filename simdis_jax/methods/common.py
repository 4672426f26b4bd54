"""The pieces methods share, imported from here and never from a sibling method module.

L2 normalisation (every method), the EMA rule (BYOL, SimDis, the supervised student's copy), a queue of
embeddings with its FIFO enqueue over the global batch, InfoNCE and SEED's soft loss, the momentum encoder,
shuffle BN (MoCo-v2, SEED), the global batch gathered over devices (MoCo-v2, SimCLR's negatives).
Read beside docs/spec.md's "MoCo-v2" and "SEED" sections. The queue is stored as
rows, (K, dim) — the authors keep (dim, K) columns; the products are the same.
Everything here is a pure function of arrays; the per-device functions
(`shuffle_to_devices`, `unshuffle_from_devices`, `gather_batch`, `enqueue_global`) run
under `jax.shard_map` with the data axis named.
"""

import math
from typing import Tuple

import jax
import jax.numpy as jnp
import optax

from simdis_jax.parallel import DATA_AXIS


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """x / max(||x||, eps) along the last axis, as torch.nn.functional.normalize."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


# The name of BYOL's predictor head (the SimDis view Ŝ-v'): a finished BYOL run's student, restored as a
# SimDis-Off or SEED teacher, carries its predictor under this name.
BYOL_PREDICTOR = "sema_dv"


# --- EMA (docs/spec.md "EMA"): BYOL's and SimDis's target networks; the supervised student's EMA copy ---
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


# --- Queue (docs/spec.md MoCo-v2 "Queue"; SEED's is the same FIFO) ---


def init_queue(rng: jax.Array, size: int, dim: int, dtype=jnp.float32) -> jnp.ndarray:
  """(size, dim) rows drawn N(0, 1) and L2-normalised, as both reference codes initialise it."""
  return l2_normalize(jax.random.normal(rng, (size, dim), dtype))


def enqueue(queue: jnp.ndarray, ptr: jnp.ndarray, keys: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Overwrites rows [ptr, ptr + B) with the global batch's keys; ptr <- (ptr + B) mod K.

  The queue size must be a multiple of the batch (checked by the config), so a batch never straddles
  the end and the pointer wraps exactly to 0.
  """
  size, batch = queue.shape[0], keys.shape[0]
  if size % batch:
    raise ValueError(f"The queue ({size}) must be a multiple of the global batch ({batch}).")
  queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (ptr, jnp.zeros_like(ptr)))
  return queue, (ptr + batch) % size


def check_queue_size(config, key: str) -> None:
  """config.<key> (a queue's size) is a positive multiple of the global batch (a config check of MoCo-v2, SEED)."""
  section, name = key.split(".")
  size, batch = config[section][name], config.train.batch_size
  if int(size) != size or size <= 0 or size % batch:
    raise ValueError(
      f"config.{key}={size!r} must be a positive multiple of config.train."
      f"batch_size={batch} (the keys of a batch never straddle the queue's end), e.g. "
      f"{max(1, 65_536 // batch) * batch}."
    )


def enqueue_global(state, embeddings: jnp.ndarray):
  """The state with this device's `embeddings`, gathered over every device (rank order), enqueued into
  state.method_state = {"queue", "ptr"} (call under shard_map)."""
  gathered = gather_batch(jax.lax.stop_gradient(embeddings), DATA_AXIS)
  queue, ptr = enqueue(state.method_state["queue"], state.method_state["ptr"], gathered)
  return state.replace(method_state={"queue": queue, "ptr": ptr})


# --- Losses ---


def info_nce(q: jnp.ndarray, k: jnp.ndarray, queue: jnp.ndarray, temperature: float) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """MoCo's InfoNCE: logits [q·k, q·queue] / T with the positive at index 0; (mean CE, logits).

  q and k must be L2-normalised already; k and the queue get no gradient.
  """
  k, queue = jax.lax.stop_gradient(k), jax.lax.stop_gradient(queue)
  positive = jnp.sum(q * k, axis=-1, keepdims=True)
  logits = jnp.concatenate([positive, q @ queue.T], axis=-1) / temperature
  labels = jnp.zeros(q.shape[0], jnp.int32)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels)), logits


def seed_loss(
  s: jnp.ndarray, t: jnp.ndarray, queue: jnp.ndarray, student_temperature: float, teacher_temperature: float
) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """SEED's soft cross-entropy between the teacher's and the student's similarity distributions.

  Over [own teacher embedding ∪ queue]: student logits [s·t, s·Q] / τ_s, teacher targets
  softmax([t·t, t·Q] / τ_t); loss = mean over the batch of −Σ_j p_j log softmax(z)_j.
  s and t are L2-normalised; the teacher side gets no gradient. Returns (loss, student logits).
  """
  t, queue = jax.lax.stop_gradient(t), jax.lax.stop_gradient(queue)
  student_logits = jnp.concatenate([jnp.sum(s * t, -1, keepdims=True), s @ queue.T], axis=-1)
  teacher_logits = jnp.concatenate([jnp.sum(t * t, -1, keepdims=True), t @ queue.T], axis=-1)
  targets = jax.nn.softmax(teacher_logits / teacher_temperature, axis=-1)
  student_logits = student_logits / student_temperature
  return jnp.mean(optax.softmax_cross_entropy(student_logits, targets)), student_logits


# --- Momentum (key) encoder (docs/spec.md MoCo-v2 "Momentum") ---


def momentum_update(key_params, query_params, momentum: float):
  """θ_k ← m·θ_k + (1 − m)·θ_q over the key encoder's params (its BN statistics stay its own)."""
  return jax.tree.map(
    lambda k, q: momentum * k + (1.0 - momentum) * q, key_params, {name: query_params[name] for name in key_params}
  )


# --- Shuffle BN across devices (docs/spec.md MoCo-v2 "Shuffle BN"); call under shard_map ---


def gather_batch(x: jnp.ndarray, axis_name: str) -> jnp.ndarray:
  """The global batch in device (rank) order, from each device's local slice."""
  return jax.lax.all_gather(x, axis_name, tiled=True)


def shuffle_to_devices(x_local: jnp.ndarray, permutation: jnp.ndarray, axis_name: str) -> jnp.ndarray:
  """This device's contiguous chunk of the permuted global batch (one permutation shared by all devices)."""
  shuffled = gather_batch(x_local, axis_name)[permutation]
  n = x_local.shape[0]
  return jax.lax.dynamic_slice_in_dim(shuffled, jax.lax.axis_index(axis_name) * n, n)


def unshuffle_from_devices(y_local: jnp.ndarray, permutation: jnp.ndarray, axis_name: str) -> jnp.ndarray:
  """Undoes `shuffle_to_devices`: the outputs of this device's own examples, in their original order."""
  shuffled = gather_batch(y_local, axis_name)
  original = jnp.zeros_like(shuffled).at[permutation].set(shuffled)
  n = y_local.shape[0]
  return jax.lax.dynamic_slice_in_dim(original, jax.lax.axis_index(axis_name) * n, n)
