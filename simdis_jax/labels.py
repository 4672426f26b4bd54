"""Display names of the methods and the target views, as the paper writes them, from the method registry.

The report, the figures and the study name things through these tables; each method module
owns its label and its description (methods/interface.py About), so a new method is named in
its own module only.
"""

from typing import Sequence

from simdis_jax import methods

# The paper's names of the target views (docs/spec.md "Target views"; paper Table 2).
VIEW_NAMES = methods.VIEW_NAMES

# The name of each config.method in tables and figures.
METHOD_NAMES = {name: methods.about(name).label for name in methods.METHODS}

# The methods whose targets are config.views; the others ignore it and are described by what they do.
VIEW_METHODS = tuple(name for name in methods.METHODS if methods.about(name).uses_views)
METHOD_TARGETS = {name: methods.about(name).targets for name in methods.METHODS if name not in VIEW_METHODS}

# The methods that train a student from a teacher network (model.teacher describes it).
TEACHER_METHODS = tuple(name for name in methods.METHODS if methods.about(name).teacher != "none")

# The paper's Figure 3 order of the methods (top-1 vs epochs per method); other labels follow, by name. The
# paper's, not the registry's (About.order puts BYOL first and MoCo-v2 fifth), and with the "-7v" labels.
FIGURE3_ORDER = ("MoCo-v2", "BYOL", "SEED", "SimDis-Off", "SimDis-Off-7v", "SimDis-On", "SimDis-On-7v", "Supervised")


def targets(method: str, views: Sequence[str], views_per_image: int = 0) -> str:
  """What a method regresses on: the target views in the paper's notation, or the method's own description.

  views_per_image: a supervised run's views per image (config.<method>.views), 0 = not said. Tables with a
  whole run config call methods.describe_targets(config) instead.
  """
  return methods.describe_targets({"method": method, "views": tuple(views), method: {"views": views_per_image}})
