"""Display names of the methods and the target views, as the paper writes them (imports nothing).

The method module (simdis.py), the report and the study name things through
this one table, so a new method or view is named in one place.
"""

from typing import Sequence

# The paper's names of the seven target views (docs/spec.md "Target views"; paper Table 2).
VIEW_NAMES = {"s_dv": "S-v'", "sema_sv": "Ŝ-v", "sema_dv": "Ŝ-v'", "t_sv": "T-v",
              "t_dv": "T-v'", "tema_sv": "T̂-v", "tema_dv": "T̂-v'"}

# The name of each config.method in tables and figures.
METHOD_NAMES = {"byol": "BYOL", "simdis_off": "SimDis-Off", "simdis_on": "SimDis-On", "supervised": "Supervised",
                "moco_v2": "MoCo-v2", "seed": "SEED"}

# The methods whose targets are config.views; the others ignore it and are described by what they do.
VIEW_METHODS = ("byol", "simdis_off", "simdis_on")
METHOD_TARGETS = {"moco_v2": "query v, key v' (queue)", "seed": "one view; teacher similarities (queue)",
                  "supervised": "labels"}

# The methods that train a student from a teacher network (model.teacher describes it).
TEACHER_METHODS = ("simdis_off", "simdis_on", "seed")

# The paper's Figure 3 order of the methods (top-1 vs epochs per method); other labels follow, by name.
FIGURE3_ORDER = ("MoCo-v2", "BYOL", "SEED", "SimDis-Off", "SimDis-Off-7v", "SimDis-On", "SimDis-On-7v", "Supervised")


def targets(method: str, views: Sequence[str], supervised_views: int = 0) -> str:
  """What a method regresses on: the target views in the paper's notation, or the method's own description."""
  if method in VIEW_METHODS:
    return ", ".join(VIEW_NAMES.get(v, v) for v in views) if views else "—"
  text = METHOD_TARGETS.get(method, "—")
  if method == "supervised" and supervised_views:
    text += f", {supervised_views} view{'s' if supervised_views > 1 else ''}"
  return text
