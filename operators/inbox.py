"""The sbi_lhe_inbox DAG's pieces: wait for LHE files under an `s3://` prefix, claim them, announce them.

What to use when:
- `sensor_arguments()`: the arguments of the amazon provider's deferrable `S3KeySensor` on `<inbox>/*.lhe*`
  (`SBI_LHE_INBOX`, through the AWS connection `SBI_AWS_CONN_ID`): the triggerer polls S3, no worker waits.
- `claim` (a task, outlet `LHE_FILES`): moves every matching file to `<inbox>-claimed/<run>/` (so the next
  wait starts from an empty inbox and each file is ingested once) and emits the `LHE_FILES` event whose
  `extra` lists the claimed URIs; `sbi_ingest`, scheduled on that asset, ingests them.
A retried claim finds what an earlier try moved (the claimed prefix is per run), so no file is lost or
announced twice. Claims run one at a time (the DAG's `max_active_runs` is 1).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from airflow.sdk import Param, get_current_context, task

from operators import settings
from operators.assets import LHE_FILES
from operators.connections import aws_conn_id
from operators.plans import checked_params

__all__ = ["CLAIMED_SUFFIX", "PATTERN", "claim", "claimed_prefix", "inbox_params", "move_to_claimed",
           "sensor_arguments"]

#: Files the inbox takes: names with `.lhe` in them (`x.lhe`, `x.lhe.gz`), anywhere under the prefix.
PATTERN = "*.lhe*"
CLAIMED_SUFFIX = "-claimed"
#: How often the triggerer lists the inbox (seconds); `SBI_LHE_POLL` overrides it.
DEFAULT_POLL = 60


def inbox_params() -> dict[str, Param]:
    """The one field: the watched prefix (default `SBI_LHE_INBOX`; a run without one is refused at trigger)."""
    return {
        "inbox": Param(
            settings.lhe_inbox(),
            type="string",
            pattern=r"^s3://[^/]+/.+[^/]$",
            title="Inbox",
            description="The s3://bucket/prefix to take LHE files from (default: the deployment's SBI_LHE_INBOX).",
        )
    }


def sensor_arguments(poke_interval: float | None = None) -> dict[str, Any]:
    """Keyword arguments of the provider's `S3KeySensor` that waits (deferred to the triggerer) until a file
    matching `PATTERN` is under the run's inbox. The DAG file imports the sensor itself, at top level, so the
    dag-processor imports the provider (and boto3) once, before it forks a parser (`parsing_pre_import_modules`)."""
    return {
        "bucket_key": f"{{{{ params.inbox }}}}/{PATTERN}",
        "wildcard_match": True,
        "aws_conn_id": aws_conn_id(),
        "deferrable": True,
        "poke_interval": poke_interval or settings.lhe_poll(DEFAULT_POLL),
        "soft_fail": True,  # after the sensor's timeout (7 days) the run is skipped, and the next one waits again
    }


def claimed_prefix(inbox: str, run_slug: str) -> str:
    """Where the files of one claim go: `<inbox>-claimed/<run slug>`."""
    return f"{inbox.rstrip('/')}{CLAIMED_SUFFIX}/{run_slug}"


def move_to_claimed(hook: Any, inbox: str, run_slug: str) -> list[str]:
    """Move every file matching `PATTERN` under `inbox` to its claimed prefix; the URIs of everything there
    (what an earlier try of this run moved included), sorted. `hook`: the amazon provider's `S3Hook`."""
    bucket, prefix = hook.parse_s3_url(inbox.rstrip("/"))
    _, target = hook.parse_s3_url(claimed_prefix(inbox, run_slug))
    client = hook.get_conn()
    for key in hook.list_keys(bucket, prefix=f"{prefix}/") or []:
        if fnmatch.fnmatch(key, f"{prefix}/{PATTERN}"):
            # A managed copy (multipart past 5 GB), then the delete: a retry redoes whatever is left.
            client.copy({"Bucket": bucket, "Key": key}, bucket, f"{target}/{key[len(prefix) + 1:]}")
            client.delete_object(Bucket=bucket, Key=key)
    return [f"s3://{bucket}/{key}" for key in sorted(hook.list_keys(bucket, prefix=f"{target}/") or [])]


@task(outlets=[LHE_FILES])
def claim() -> dict[str, Any]:
    """Move the inbox's LHE files under this run's claimed prefix and emit the `LHE_FILES` event listing them."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk.exceptions import AirflowSkipException

    context = get_current_context()
    inbox = checked_params(context)["inbox"].rstrip("/")
    files = move_to_claimed(S3Hook(aws_conn_id=aws_conn_id()), inbox, settings.run_slug(context["run_id"]))
    if not files:
        raise AirflowSkipException(f"nothing to claim under {inbox}/ (the files went before this task ran)")
    extra: dict[str, Any] = {"files": files, "inbox": inbox, "dag_id": context["dag"].dag_id,
                             "run_id": context["run_id"]}
    if settings.lhe_config():
        extra["config_uri"] = settings.lhe_config()
    context["outlet_events"][LHE_FILES].extra = extra
    return extra
