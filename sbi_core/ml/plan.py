"""The networks a run trains, from its config alone (no file is read): what configure and derive report.

`training_plan(cfg)` -> {"methods": [...], "n_networks": N, "networks": {method: [network ids]}}. Per method,
N counts (nominal heads + 2 x shape systematics if training.variations) x members; the heads and which
of them get variations are defined in `sbi_core.data.training_sets` (docs/training-sets.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sbi_core.data.training_sets import sample_specs

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig


def training_plan(cfg: AnalysisConfig) -> dict[str, Any]:
    """Methods, total network count and every network id per method, in training order."""
    members = cfg.training.members
    networks = {
        method: [nid for spec in sample_specs(method, cfg) for nid in spec.network_ids(members)]
        for method in cfg.training.methods
    }
    return {
        "methods": list(cfg.training.methods),
        "n_networks": sum(len(ids) for ids in networks.values()),
        "networks": networks,
    }


def plan_summary(cfg: AnalysisConfig) -> dict[str, Any]:
    """The keys configure's and derive's summaries carry: methods and the network count."""
    plan = training_plan(cfg)
    return {"methods": plan["methods"], "n_networks": plan["n_networks"]}
