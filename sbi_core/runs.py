"""A configured run, as every stage reads it: its layout, its validated config, its generation plan.

What to use when: `load_run(uri)` at the start of any step that works on an existing run (it checks that
config.yaml and plan.json agree); `run_events(layout, plan)` for the events file the later stages read (a
derived run reads its source's); `networks_layout(layout, plan)` for the run whose trained ensembles the
learned likelihood reads (a run derived from a trained run reads its source's); `configured_plan(uri)`
when only the plan is needed (combine). This module
sits below the stage rooms (`data/`, `ml/`, `inference/`, `studies/`), which look down to it, never up to
`sbi_core.steps`.
"""

from __future__ import annotations

from sbi_core import storage
from sbi_core.config import AnalysisConfig, config_hash, load_config
from sbi_core.errors import InputError
from sbi_core.layout import RunLayout
from sbi_core.plan import GenerationPlan

__all__ = ["configured_plan", "load_run", "networks_layout", "read_plan", "run_events"]


def configured_plan(run_uri: str) -> tuple[RunLayout, GenerationPlan]:
    """A run's layout and plan; InputError when the run was never configured."""
    layout = RunLayout(run_uri)
    if not storage.exists(layout.plan):
        raise InputError(f"run {layout.root} is not configured (no plan.json): run `sbi-core configure` first")
    return layout, read_plan(layout.plan)


def read_plan(uri: str) -> GenerationPlan:
    """The plan in a plan.json; InputError naming the file when it is not JSON or not a plan."""
    try:
        data = storage.read_json(uri)
    except FileNotFoundError:
        raise InputError(f"{uri} not found: run `sbi-core configure` first") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{uri} is not valid JSON ({exc}): reconfigure the run") from None
    return GenerationPlan.from_json(data, uri)


def load_run(run_uri: str) -> tuple[RunLayout, AnalysisConfig, GenerationPlan]:
    """A configured run's layout, config and plan; InputError when the run was never configured."""
    layout, plan = configured_plan(run_uri)
    cfg = load_config(layout.config)
    if config_hash(cfg) != plan.config_hash:
        raise InputError(f"{layout.config} does not match {layout.plan} (config hash differs): reconfigure the run")
    return layout, cfg, plan


def run_events(layout: RunLayout, plan: GenerationPlan) -> str:
    """The events file a run's later stages read: its own events.h5, or its source run's when derived."""
    return plan.events_uri or layout.events


def networks_layout(layout: RunLayout, plan: GenerationPlan) -> RunLayout:
    """The run whose trained ensembles a run's learned likelihood reads: its own, or (a run derived from a
    trained run) the source's, unless it trained ensembles of its own since."""
    if plan.networks_uri and not storage.exists(layout.ensembles_index):
        return RunLayout(plan.networks_uri)
    return layout
