"""The optimizer core: filters × normalizers × schedules, composed into a torch optimizer.

Usable alone: it imports nothing else of trx.

    from trx.optim import build_optimizer
    opt = build_optimizer(model, {"lr": 3e-3, "filter": {"name": "ema", "beta": 0.9},
                                  "normalizer": {"name": "adam"}}, total_steps=1000)
"""

from trx.optim.base import ROLES, ConfigError, StepContext
from trx.optim.filters import FILTERS, Filter
from trx.optim.normalizers import NORMALIZERS, Normalizer
from trx.optim.optimizer import TrustRegionOptimizer, build_optimizer, default_roles, plan_groups
from trx.optim.schedules import PROTOTYPES, Schedule, lr_ratio
from trx.optim.spec import ArmConfig, AuxConfig, WeightDecay
from trx.optim.trust import TrustRatio, UpdateClip

__all__ = [
    "ROLES",
    "FILTERS",
    "NORMALIZERS",
    "PROTOTYPES",
    "ArmConfig",
    "AuxConfig",
    "ConfigError",
    "Filter",
    "Normalizer",
    "Schedule",
    "StepContext",
    "TrustRatio",
    "TrustRegionOptimizer",
    "UpdateClip",
    "WeightDecay",
    "build_optimizer",
    "default_roles",
    "lr_ratio",
    "plan_groups",
]
