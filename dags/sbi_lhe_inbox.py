"""sbi_lhe_inbox: wait for LHE files under an s3:// prefix (the triggerer waits), claim them, start sbi_ingest.

Wiring only: the sensor and the claim task are `operators.inbox`'s; the `sbi_lhe_files` asset event of the
claim starts a sbi_ingest run on the claimed files.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.sdk import dag

from operators import settings
from operators.inbox import claim, inbox_params, sensor_arguments
from operators.steps import task_defaults

DOC_MD = """
# LHE inbox: new files start an ingest

Drop Les Houches event files (`*.lhe`, `*.lhe.gz`) under the deployment's inbox, `SBI_LHE_INBOX`
(`s3://bucket/prefix`), and they are ingested without anyone opening the UI:

| task | what it does |
|---|---|
| `wait_for_lhe` | a deferrable `S3KeySensor` on `<inbox>/*.lhe*`: the triggerer lists the prefix every `SBI_LHE_POLL` seconds (60), no worker slot waits |
| `claim` | moves the files to `<inbox>-claimed/<run id>/` and emits the `sbi_lhe_files` asset event listing them |

The asset event starts a **sbi_ingest** run on exactly those files (its form's defaults, or the config
`SBI_LHE_CONFIG` names); where the stages are chained (`SBI_CHAIN_STAGES=true`) its events start
**sbi_train**, whose networks start **sbi_infer**. S3 is reached through the Airflow connection
`SBI_AWS_CONN_ID` (default `aws_default`).

With `SBI_LHE_INBOX` set this DAG runs continuously, one run at a time: a run waits, claims, ends, and the
next one waits again. Without it the DAG has no schedule; a manual run takes the inbox from its form.
"""


@dag(
    dag_id="sbi_lhe_inbox",
    schedule="@continuous" if settings.lhe_inbox() else None,
    # A continuous DAG without a start date gives its second run the first one's logical date (Airflow 3.3.2
    # then skips it as existing, forever): any date in the past; continuous runs never catch up.
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    max_active_runs=1,
    catchup=False,
    params=inbox_params(),
    default_args=task_defaults(),
    doc_md=DOC_MD,
    tags=["sbi", "lhe"],
)
def sbi_lhe_inbox() -> None:
    """wait_for_lhe (deferred to the triggerer) -> claim."""
    S3KeySensor(task_id="wait_for_lhe", **sensor_arguments()) >> claim()


sbi_lhe_inbox()
