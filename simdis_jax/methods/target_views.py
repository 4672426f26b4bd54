"""SimDis's seven target views, as data: their table, display names and the check of config.views.

The schema (configuration.py) reads them without importing JAX; methods/simdis.py implements the views.
"""

from typing import Dict, Sequence, Tuple

from simdis_jax import labels

# --- The seven target views (docs/spec.md "Two augmented views, seven targets") ---
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
PAPER_NAMES = labels.VIEW_NAMES  # the display names, shared with the report (simdis_jax/labels.py)
# BYOL's own term; also the name of the teacher's single predictor head, so that
# a finished BYOL run's student restores directly as a SimDis teacher.
BYOL_HEAD = "sema_dv"
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
