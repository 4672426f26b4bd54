"""The pieces MoCo-v2 and SEED share: a queue of embeddings, their two losses, the momentum encoder, shuffle BN.

Read beside docs/spec.md's "MoCo-v2" and "SEED" sections. The queue is stored as
rows, (K, dim) — the authors keep (dim, K) columns; the products are the same.
Everything here is a pure function of arrays; the per-device functions
(`shuffle_to_devices`, `unshuffle_from_devices`, `gather_batch`) run under
`jax.shard_map` with the data axis named.
"""

from typing import Tuple

import jax
import jax.numpy as jnp
import optax

from simdis_jax.methods.simdis import l2_normalize


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


# --- Losses ---

def info_nce(q: jnp.ndarray, k: jnp.ndarray, queue: jnp.ndarray, temperature: float
             ) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """MoCo's InfoNCE: logits [q·k, q·queue] / T with the positive at index 0; (mean CE, logits).

  q and k must be L2-normalised already; k and the queue get no gradient.
  """
  k, queue = jax.lax.stop_gradient(k), jax.lax.stop_gradient(queue)
  positive = jnp.sum(q * k, axis=-1, keepdims=True)
  logits = jnp.concatenate([positive, q @ queue.T], axis=-1) / temperature
  labels = jnp.zeros(q.shape[0], jnp.int32)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels)), logits


def seed_loss(s: jnp.ndarray, t: jnp.ndarray, queue: jnp.ndarray, student_temperature: float,
              teacher_temperature: float) -> Tuple[jnp.ndarray, jnp.ndarray]:
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
  return jax.tree.map(lambda k, q: momentum * k + (1.0 - momentum) * q, key_params,
                      {name: query_params[name] for name in key_params})


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
