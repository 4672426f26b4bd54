"""Display names of the methods and the target views, as the paper writes them (imports nothing).

The method module (simdis.py), the report and the study name things through
this one table, so a new method or view is named in one place.
"""

# The paper's names of the seven target views (SPEC.md "Target views"; paper Table 2).
VIEW_NAMES = {"s_dv": "S-v'", "sema_sv": "Ŝ-v", "sema_dv": "Ŝ-v'", "t_sv": "T-v",
              "t_dv": "T-v'", "tema_sv": "T̂-v", "tema_dv": "T̂-v'"}

# The name of each config.method in tables and figures.
METHOD_NAMES = {"byol": "BYOL", "simdis_off": "SimDis-Off", "simdis_on": "SimDis-On", "supervised": "Supervised",
                "moco_v2": "MoCo-v2", "seed": "SEED"}

# The paper's Figure 3 order of the methods (top-1 vs epochs per method); other labels follow, by name.
FIGURE3_ORDER = ("MoCo-v2", "BYOL", "SEED", "SimDis-Off", "SimDis-Off-7v", "SimDis-On", "SimDis-On-7v", "Supervised")
