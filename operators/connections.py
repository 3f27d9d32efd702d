"""S3 credentials from an Airflow connection: where Airflow meets S3, through the amazon provider.

What to use when:
- `step_environment(os.environ)`: the environment of a local step's subprocess, with the `AWS_*` variables
  of the connection `SBI_AWS_CONN_ID` (default `aws_default`): access key, secret, session token, endpoint,
  region, as the provider's `S3Hook` resolves them (login/password, a role, a profile...). No such
  connection: the step keeps the worker's environment (the embedded default).
- `aws_conn_id()`: the connection id the S3 sensor of `sbi_lhe_inbox` uses.
Pods never see the connection: they get the Kubernetes Secret their profile names (`s3_secret`), by
reference, so no credential is in a pod spec. The values go to a child process's environment only: never to
an XCom, a log line (they are registered with Airflow's secrets masker as well), a template or the DAG.
Imported at run time only (the provider's import costs a second or two).
"""

from __future__ import annotations

from collections.abc import Mapping

from operators import settings
from operators.settings import SettingError

__all__ = ["S3_VARIABLES", "SECRET_VARIABLES", "aws_conn_id", "connection_variables", "step_environment"]

#: Variables that hold a credential (masked in logs; tests look for their values in XComs and logs).
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
#: Every variable the connection decides for a step.
S3_VARIABLES = ("AWS_ACCESS_KEY_ID", *SECRET_VARIABLES, "AWS_ENDPOINT_URL", "SBI_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION")


def aws_conn_id() -> str:
    """The id of the AWS connection Airflow uses for S3 (`SBI_AWS_CONN_ID`, default `aws_default`)."""
    return settings.aws_conn_id()[0]


def step_environment(base: Mapping[str, str]) -> dict[str, str]:
    """`base` (the worker's environment) with the S3 variables of the AWS connection, for a step's subprocess.

    The connection's values replace every variable of `S3_VARIABLES` (one it leaves empty is removed, so a
    session token of the worker never pairs with the connection's key). `base` unchanged when the default
    connection does not exist; a connection that `SBI_AWS_CONN_ID` names must exist (`SettingError`
    otherwise: a deployment mistake, not worth a retry)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    conn_id, named = settings.aws_conn_id()
    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        if named:
            raise SettingError(f"SBI_AWS_CONN_ID={conn_id!r}: there is no Airflow connection with this id") from exc
        return dict(base)
    env = {name: value for name, value in base.items() if name not in S3_VARIABLES}
    return {**env, **connection_variables(conn_id)}


def connection_variables(conn_id: str) -> dict[str, str]:
    """What the provider's hook resolves for `conn_id`, as the environment variables boto3 and s3fs read."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk.log import mask_secret

    hook = S3Hook(aws_conn_id=conn_id)
    credentials = hook.get_credentials()
    config = hook.conn_config
    env = {
        "AWS_ACCESS_KEY_ID": credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
        "AWS_SESSION_TOKEN": credentials.token,
        "AWS_ENDPOINT_URL": config.endpoint_url,
        # sbi_core.storage prefers SBI_S3_ENDPOINT_URL: the connection's endpoint must win over the worker's.
        "SBI_S3_ENDPOINT_URL": config.endpoint_url,
        "AWS_DEFAULT_REGION": config.region_name,
    }
    for name in SECRET_VARIABLES:
        if env[name]:
            mask_secret(env[name], name)
    return {name: value for name, value in env.items() if value}
