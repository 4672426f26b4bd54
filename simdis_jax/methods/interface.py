"""What a method module provides, and the description of one network forward it asks the step for.

A method module (methods/simdis.py, methods/supervised.py) defines these functions;
step.py calls them and does the rest (augmentation, forwards, gradients,
cross-device reduction, the optimizer update, the online probe):

  online_networks(config) -> {"student": kwargs, "teacher": kwargs}
      The online networks the method needs and the heads each is built with (keyword
      arguments of models.network.network_from_config: `heads`, `num_classes`). Every
      online network gets an EMA ("target") partner of the same encoder and projector.
  forwards(config) -> Tuple[Forward, ...]
      The forwards of one step, in order: which network, on which views, in which BN
      mode, trainable or frozen. The optimizer updates exactly the networks that a
      `trainable` forward names.
  loss(outputs, labels, state, config) -> (loss, metrics)
      The scalar to minimise, from outputs[network] = (output dict of each view it saw)
      and the (pre-update) train state, e.g. a queue of embeddings to contrast with.
  before_update(state, config, total_steps) -> (state, metrics)
      Extra state updates at the start of the step, before any forward (the authors'
      EMA; MoCo's momentum encoder). Its metrics are reported as they are (not averaged).
  after_update(state, outputs, config, total_steps) -> state
      Extra state updates after the optimizer step (DeepMind's EMA; a MoCo / SEED
      queue, which would gather `outputs` over parallel.DATA_AXIS and enqueue them).

Methods hold no state of their own: everything lives in the one TrainState. A method
with extra state (MoCo-v2's and SEED's queue of embeddings and its pointer) adds it as
one TrainState field (TrainState.queue), filled when the state is created by the module's
optional `init_queue_state(config, rng)` and replaced by its hooks (after_update enqueues).
A loss may return the logits it computed as metrics["logits"]: the step takes them out of the
metrics (they are per example) and the research step returns them.
MoCo's momentum key encoder is the student's EMA partner ("student_ema"), moved by
before_update; its shuffled BN is the Forward option `shuffle`.
"""

import dataclasses
from typing import Tuple

NETWORKS = ("student", "student_ema", "teacher", "teacher_ema")
BN_MODES = ("train", "eval")


@dataclasses.dataclass(frozen=True)
class Forward:
  """One network run on some of the step's views, each view in its own call (its own BN batch).

  network: a field of state.Networks ("student", "student_ema", "teacher", "teacher_ema");
    online networks read state.<network>.params, EMA ones state.<pair>.ema_params.
  trainable: the parameters come from the optimizer's tree and receive gradient;
    otherwise they are read from the state under stop-gradient.
  bn: "train" normalises with the view's batch statistics, "eval" with the running ones.
  update_stats: keep the running statistics the train-mode forward computes.
  views: indices into the step's views (0 = v, 1 = v').
  shuffle: shuffle BN (MoCo's key encoder): the network sees its device's chunk of a permutation of
    the global batch (the step's `permutation`, one for all devices) and its outputs are put back
    into the original order before the loss (methods/contrastive.py shuffle_to_devices).
  """
  network: str
  trainable: bool
  bn: str
  update_stats: bool
  views: Tuple[int, ...] = (0, 1)
  shuffle: bool = False

  def __post_init__(self):
    if self.network not in NETWORKS:
      raise ValueError(f"Forward.network={self.network!r}; choose one of {NETWORKS}.")
    if self.bn not in BN_MODES:
      raise ValueError(f"Forward.bn={self.bn!r}; choose one of {BN_MODES}.")
    if self.update_stats and self.bn != "train":
      raise ValueError(f"Forward of {self.network}: update_stats needs bn='train' (eval mode computes none).")
    if self.shuffle and self.trainable:
      raise ValueError(f"Forward of {self.network}: shuffle BN is for a frozen (key) encoder, not a trainable one.")
    if self.trainable and self.network.endswith("_ema"):
      raise ValueError(f"Forward of {self.network}: EMA networks are never trainable (they follow the EMA rule).")
