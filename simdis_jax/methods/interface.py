"""What a method module provides: everything method-specific lives in its module, nowhere else.

A method module (methods/simdis.py, moco_v2.py, ...) is listed once in methods/__init__.py's
registry; configuration, state, step, train and the report ask the registry, never name a method.
It defines:

  ABOUT: {config.method value: About(...)}
      The methods the module implements, in the registry's order, with what the rest of the
      package needs to know of each: report label, teacher kind, labels, target description.
  defaults(c) -> None                                        (optional)
      Adds the module's config keys with their defaults to the base config `c` (its own section,
      e.g. c.moco; SimDis's top-level views and head_combination).
  RULES: tuple of dicts                                      (optional)
      Rows of the validation table, as keyword arguments of configuration.Rule, e.g.
      dict(key="moco.temperature", above=0.0, hint="MoCo-v2 uses 0.2"); they apply whatever
      config.method is, like every row.
  validate(config) -> None                                   (optional)
      Cross-key rules, called when config.method is one of the module's: raise a ValueError of
      one line naming the key and the fix.
  init_method_state(config, rng) -> pytree                   (optional)
      The method's extra train state (TrainState.method_state; MoCo-v2's and SEED's queue and
      pointer), created with the state; its hooks replace it. Without it the field is None.
  optimizer(config, schedule) -> optax.GradientTransformation     (optional)
      The method's own optimizer (SimSiam's predictor at a fixed rate); by default config.optim's.
  describe_targets(config) -> str                            (optional)
      What it regresses on, for tables (config: a saved run config, dict-like); by default
      About.targets.
  teacher_role(config) -> TeacherRole                        (optional)
      Methods a SimDis-On teacher may train by (config.teacher.method): the teacher's heads,
      its own loss and whether it has an EMA network (the T̂ target views).

and the step's functions:

  online_networks(config) -> {"student": kwargs, "teacher": kwargs}
      The online networks the method needs and the heads each is built with (keyword
      arguments of models.network.network_from_config: `heads`, `num_classes`, and a method's own
      head modules `projector_module` / `predictor_module`). Every online network gets an EMA
      ("target") partner of the same encoder and projector.
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

Methods hold no state of their own: everything lives in the one TrainState, a method's extra
state in TrainState.method_state (checkpoints written before the field, which called it `queue`,
restore into it). Pieces several methods use (L2 normalisation, InfoNCE, the queue and its
enqueue, gathering the global batch) are in methods/common.py; a method never imports a sibling.
A loss may return the logits it computed as metrics["logits"]: the step takes them out of the
metrics (they are per example) and the research step returns them.
MoCo's momentum key encoder is the student's EMA partner ("student_ema"), moved by
before_update; its shuffled BN is the Forward option `shuffle`.
"""

import dataclasses
from typing import Any, Callable, Tuple

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
    into the original order before the loss (methods/common.py shuffle_to_devices).
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


TEACHER_KINDS = ("none", "online", "offline")


@dataclasses.dataclass(frozen=True)
class About:
  """What the package outside methods/ knows of one config.method value.

  label: its name in tables and figures (the paper's, e.g. "SimDis-Off").
  order: its place in the registry (methods.METHODS: the order of the method choices a message lists). The
    report's figures follow the paper's Figure 3 instead (labels.FIGURE3_ORDER), which differs.
  teacher: "none"; "online" (a teacher trained beside the student); "offline" (a frozen teacher
    restored from a finished run, config.teacher.workdir, before the first step).
  needs_labels: trains on labels (its data must have them); its own classifier is evaluated at the end.
  uses_views: its targets are config.views (the report lists them; "-7v" is added to the label when
    a run uses all seven).
  targets: what it learns from, for tables, when not uses_views.
  teacher_source: a finished run of it can be an offline teacher (its student restores as the teacher).
  """

  label: str
  order: float
  teacher: str = "none"
  needs_labels: bool = False
  uses_views: bool = False
  targets: str = "—"
  teacher_source: bool = False

  def __post_init__(self):
    if self.teacher not in TEACHER_KINDS:
      raise ValueError(f"About({self.label!r}).teacher={self.teacher!r}; choose one of {TEACHER_KINDS}.")


@dataclasses.dataclass(frozen=True)
class TeacherRole:
  """How a method trains an online SimDis teacher (config.teacher.method), beside the distilled student.

  heads: keyword arguments of the teacher network (as online_networks' values).
  loss: (teacher outputs of (v, v'), teacher-EMA projections of (v, v') or None, config) -> scalar,
    the teacher's own objective, added to the student's loss with weight 1.
  ema: whether the teacher has an EMA network (T̂): without one, the T̂ target views are invalid,
    the teacher EMA is neither run nor moved.
  """

  heads: Any
  loss: Callable
  ema: bool
