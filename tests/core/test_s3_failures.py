"""Bad S3 settings end in exit 2 with one line naming the setting; a silent endpoint fails within the configured
timeout (exit 1, retried by Airflow). Against an S3 emulator with IAM authentication on (moto, started here)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sbi_core import cli, s3
from tests.conftest import BENCHMARK_CONFIG, run_cli
from tests.core.conftest import free_port

#: Requests a refusal may take (what keeps it to seconds, counted rather than timed: a loaded machine stretches
#: any time): none when the settings are refused before S3 is asked, one when S3 answers with a refusal (not
#: retried), SBI_S3_MAX_ATTEMPTS (default 3) when nothing answers.
ATTEMPTS = {"wrong access key id": 1, "wrong secret": 1, "no credentials": 0, "missing bucket": 1, "no permission": 1,
            "refused endpoint": s3.S3Settings(None, None).max_attempts,
            "unknown host": s3.S3Settings(None, None).max_attempts, "bad timeout value": 0}
POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


@pytest.fixture(scope="module")
def s3_auth():
    """A moto server that checks credentials: a user `writer` allowed everything, a user `nobody` allowed
    nothing, a bucket `runs`. Yields the endpoint and the two users' keys."""
    import boto3
    import requests

    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)
        kw = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "setup",
              "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **kw)
        boto3.client("s3", **kw).create_bucket(Bucket="runs")
        keys = {}
        for user in ("writer", "nobody"):
            iam.create_user(UserName=user)
            keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
        iam.put_user_policy(UserName="writer", PolicyName="all", PolicyDocument=json.dumps(POLICY))
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()  # auth on
        yield endpoint, keys
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def _env(monkeypatch, endpoint: str, key: dict | None, **extra: str) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SBI_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe for credentials
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    if key is not None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a new process would build its client from these settings
    s3.forget_checks()


def _configure(capfd, run: str) -> tuple[int, str]:
    """`sbi-core configure` in this process: exit code, stderr."""
    capfd.readouterr()
    code = cli.main(["configure", "--config", str(BENCHMARK_CONFIG), "--run", run, "--set", "generation.events=600",
                     "--set", "generation.shards=2"])
    return code, capfd.readouterr().err


@pytest.fixture()
def attempts(monkeypatch) -> list[str]:
    """The S3 operation of every request botocore sends in this process (each retry is one more)."""
    from aiobotocore.endpoint import AioEndpoint

    sent: list[str] = []
    send = AioEndpoint._get_response

    async def counted(self, request, operation_model, context):
        sent.append(operation_model.name)
        return await send(self, request, operation_model, context)

    monkeypatch.setattr(AioEndpoint, "_get_response", counted)
    return sent


def _wrong(key: dict, field: str) -> dict:
    return {**key, field: "AKIAWRONGWRONGWRONG1" if field == "AccessKeyId" else "not-the-secret"}


@pytest.mark.integration
@pytest.mark.parametrize(("case", "named"), [
    ("good credentials", None),
    ("wrong access key id", "AWS_ACCESS_KEY_ID"),
    ("wrong secret", "AWS_SECRET_ACCESS_KEY"),
    ("no credentials", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    ("missing bucket", "bucket 'no-such-bucket' does not exist"),
    ("no permission", "bucket policy must allow"),
    ("refused endpoint", "check SBI_S3_ENDPOINT_URL"),
    ("unknown host", "check SBI_S3_ENDPOINT_URL"),
    ("bad timeout value", "SBI_S3_READ_TIMEOUT='soon'"),
])
def test_bad_setting_is_exit_2_naming_it(s3_auth, monkeypatch, capfd, tmp_path, attempts, case, named):
    endpoint, keys = s3_auth
    bucket = "runs"
    key: dict | None = keys["writer"]
    extra: dict[str, str] = {}
    if case == "wrong access key id":
        key = _wrong(key, "AccessKeyId")
    elif case == "wrong secret":
        key = _wrong(key, "SecretAccessKey")
    elif case == "no credentials":
        key = None
    elif case == "missing bucket":
        bucket = "no-such-bucket"
    elif case == "no permission":
        key = keys["nobody"]
    elif case == "refused endpoint":
        endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    elif case == "unknown host":
        endpoint = "http://sbi-no-such-host.invalid:9000"
    elif case == "bad timeout value":
        extra["SBI_S3_READ_TIMEOUT"] = "soon"
    _env(monkeypatch, endpoint, key, **extra)
    code, err = _configure(capfd, f"s3://{bucket}/{case.replace(' ', '-')}")
    if named is None:
        assert code == 0, err
        return
    lines = [line for line in err.splitlines() if line.startswith("sbi-core configure: error")]
    assert code == 2 and len(lines) == 1, err
    assert named in lines[0] and "Traceback" not in err, err
    assert len(attempts) == ATTEMPTS[case], f"{case}: refused after the requests {attempts}"


@pytest.mark.integration
def test_bad_credentials_through_a_real_process(s3_auth, tmp_path):
    """The same refusal as Airflow's local backend sees it: a fresh `sbi-core` process, exit 2, one line (its one
    request, not retried, is counted in-process by the "wrong secret" case above)."""
    endpoint, keys = s3_auth
    env = {"SBI_S3_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_ACCESS_KEY_ID": keys["writer"]["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    res = run_cli("configure", "--config", str(BENCHMARK_CONFIG), "--run", "s3://runs/fresh", env=env, timeout=120)
    assert res.returncode == 2 and res.stdout == "", res.stderr
    assert res.stderr.strip().splitlines() == [
        "sbi-core configure: error: S3 rejected the signature: check AWS_SECRET_ACCESS_KEY (credentials from the "
        f"environment: AWS_ACCESS_KEY_ID ...{keys['writer']['AccessKeyId'][-4:]} and AWS_SECRET_ACCESS_KEY (on "
        "Kubernetes, the profile's s3_secret))"]


class SilentEndpoint:
    """A socket on 127.0.0.1 that accepts connections and never answers; counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.accepted: list[float] = []
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.perf_counter())
            self._held.append(conn)

    def close(self) -> None:
        for conn in self._held:
            conn.close()
        self.sock.close()


@pytest.mark.integration
def test_silent_endpoint_fails_within_the_configured_timeout(monkeypatch, capfd):
    """Each attempt waits SBI_S3_READ_TIMEOUT for an answer that never comes; after SBI_S3_MAX_ATTEMPTS the step
    fails with exit 1 (a timeout is worth a retry) and one line naming the limits."""
    silent = SilentEndpoint()
    try:
        _env(monkeypatch, silent.url, {"AccessKeyId": "AKIAEXAMPLEEXAMPLE12", "SecretAccessKey": "x"},
             SBI_S3_READ_TIMEOUT="1", SBI_S3_CONNECT_TIMEOUT="1", SBI_S3_MAX_ATTEMPTS="2")
        code, err = _configure(capfd, "s3://runs/silent")
    finally:
        silent.close()
    assert code == 1, err
    assert "did not answer" in err and "SBI_S3_READ_TIMEOUT" in err and "Traceback" not in err, err
    # the mechanism that bounds the wait, counted rather than timed (a loaded machine stretches any time): one
    # connection per attempt, each waiting SBI_S3_READ_TIMEOUT; the defaults (3 x 15 s) keep a silent endpoint
    # under a minute, where s3fs's own loop took 416 s before
    assert len(silent.accepted) == 2, f"expected one connection per attempt, got {len(silent.accepted)}"
    assert s3.S3Settings(None, None).max_attempts * s3.S3Settings(None, None).read_timeout + 3 < 60


class Throttling:
    """An HTTP server on 127.0.0.1 that answers every request with S3's 503 SlowDown; counts the requests."""

    BODY = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
            b"<Message>Please reduce your request rate.</Message></Error>")

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                outer.requests += 1
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(outer.BODY)))
                self.end_headers()
                self.wfile.write(outer.BODY)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.integration
def test_throttling_is_retried_with_back_off_then_exit_1(monkeypatch, capfd):
    """503 SlowDown is transient: botocore retries it (SBI_S3_MAX_ATTEMPTS requests in all, with back-off), then
    the step fails with exit 1 (Airflow retries it later) and one line, not a traceback."""
    throttled = Throttling()
    try:
        _env(monkeypatch, throttled.url, {"AccessKeyId": "AKIAEXAMPLEEXAMPLE12", "SecretAccessKey": "x"},
             SBI_S3_MAX_ATTEMPTS="3")
        code, err = _configure(capfd, "s3://runs/throttled")
    finally:
        throttled.close()
    assert code == 1 and "kept failing" in err and "SlowDown" in err and "Traceback" not in err, err
    assert throttled.requests == 3  # the retries, counted: SBI_S3_MAX_ATTEMPTS requests in all
