"""The data assets that chain the stage DAGs, their schedules, and the tasks that publish and read their events.

Each stage's output is an Airflow Asset; a stage DAG that finishes emits an asset event whose `extra` names
the run it wrote (`{"run": URI, "dag_id": ..., "run_id": ..., ...}`), and the next stage, scheduled on
that asset, starts a run of its own on it. The UI shows the events and which run each one started.

    LHE files land under SBI_LHE_INBOX -> sbi_lhe_inbox --LHE_FILES--> sbi_ingest --EVENTS--> sbi_train
        --NETWORKS--> sbi_infer --RESULTS-->     (sbi_pipeline emits EVENTS when its form asks it to)

What to use when:
- `stage_schedule(dag_id, asset)`: a stage DAG's schedule: its input asset when `SBI_CHAIN_STAGES` is on,
  a cron when `SBI_SCHEDULE_<DAG ID>` is set, both, or none (manual runs); `run_limits(schedule)`: its
  `catchup` (off) and `max_active_runs` (1 when scheduled).
- `publish(...)` (a task; give it `outlets=[ASSET]` with `.override`): emits the event, naming the run.
- `asset_source(context)`: the run an asset-triggered (or cron) run of sbi_train / sbi_infer starts from:
  the newest triggering event of the task's inlet asset, else that asset's newest event.
- `inbox_inputs(context)`: the LHE files and config of the `LHE_FILES` events that started a sbi_ingest run.
Several events that arrive while a run is active start one run: the newest run wins for sbi_train and
sbi_infer (a refresh of the latest data), and sbi_ingest reads the files of every event.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, get_current_context, task

from operators import settings

__all__ = ["EVENTS", "LHE_FILES", "NETWORKS", "RESULTS", "asset_source", "inbox_inputs", "publish", "run_limits",
           "stage_schedule"]

LHE_FILES = Asset(name="sbi_lhe_files", uri="x-sbi://lhe-files", group="sbi")
EVENTS = Asset(name="sbi_events", uri="x-sbi://events", group="sbi")
NETWORKS = Asset(name="sbi_networks", uri="x-sbi://networks", group="sbi")
RESULTS = Asset(name="sbi_results", uri="x-sbi://results", group="sbi")
#: The timezone of the cron settings.
CRON_TIMEZONE = "UTC"
_SCALARS = (str, int, float, bool)


def stage_schedule(dag_id: str, asset: Asset | None = None) -> Any:
    """A stage DAG's `schedule` from the deployment settings: its input `asset` (when the stages are chained;
    for `LHE_FILES`, when an inbox is set), the cron of `SBI_SCHEDULE_<DAG ID>`, both, or None."""
    cron = settings.schedule_cron(dag_id)
    chained = asset is not None and (settings.lhe_inbox() is not None if asset == LHE_FILES
                                     else settings.chain_stages())
    timetable = CronTriggerTimetable(cron, timezone=CRON_TIMEZONE) if cron else None
    if chained and timetable is not None:
        return AssetOrTimeSchedule(timetable=timetable, assets=asset)
    if chained:
        return asset
    return timetable


def run_limits(schedule: Any) -> dict[str, Any]:
    """`catchup` and `max_active_runs` for a DAG with `schedule`.

    A scheduled DAG runs one run at a time, so runs never pile up behind a slow one: events that arrive
    meanwhile start a single next run, and a cron time that passes while a run is active is not made up
    (`catchup=False`). A DAG without a schedule keeps Airflow's limit for manual runs."""
    return {"catchup": False, **({"max_active_runs": 1} if schedule is not None else {})}


@task
def publish(run: str, summary: Mapping[str, Any] | None = None, when: str | None = None) -> dict[str, Any]:
    """Emit the event of this task's outlet asset, naming `run` and the scalar facts of `summary`.

    `when`: the name of a boolean param; the task is skipped (no event) unless the run's form set it."""
    from airflow.sdk.exceptions import AirflowSkipException

    context = get_current_context()
    if when is not None and not context["params"].get(when):
        raise AirflowSkipException(f"not published: the form's {when!r} is off")
    facts = {k: v for k, v in (summary or {}).items() if isinstance(v, _SCALARS) and k != "run"}
    extra = {"run": run, "dag_id": context["dag"].dag_id, "run_id": context["run_id"], **facts}
    for asset in context["task"].outlets:
        context["outlet_events"][asset].extra = extra
    return extra


def asset_source(context: Mapping[str, Any]) -> tuple[str, str] | None:
    """(asset name, run) for the run named by the newest event of this task's inlet asset that triggered
    this run, else by that asset's newest event (a cron run); None when no event names a run."""
    triggering = context.get("triggering_asset_events") or {}
    for asset in [a for a in (context["task"].inlets or []) if isinstance(a, Asset)]:
        events = list(triggering[asset]) if asset in triggering else []
        if not events:
            events = list(context["inlet_events"][asset].ascending(False).limit(1))
        runs = [(e.timestamp, e.extra["run"]) for e in events if isinstance((e.extra or {}).get("run"), str)]
        if runs:
            return asset.name, max(runs)[1]
    return None


def inbox_inputs(context: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(config URI or None, `--set` items) of the `LHE_FILES` events that triggered this run ((None, []) if none)."""
    triggering = context.get("triggering_asset_events") or {}
    events = sorted(triggering[LHE_FILES], key=lambda e: e.timestamp) if LHE_FILES in triggering else []
    files = [f for e in events for f in (e.extra or {}).get("files", [])]
    if not files:
        return None, []
    configs = [e.extra["config_uri"] for e in events if (e.extra or {}).get("config_uri")]
    # An LHE run has one shard per input file.
    return (configs[-1] if configs else None), [f"simulator.options.files={json.dumps(files)}",
                                                f"generation.shards={len(files)}"]
