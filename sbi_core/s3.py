"""S3 for `sbi_core.storage`: the settings, one filesystem per settings, a check of each bucket on first use,
and S3 errors turned into what to fix.

What to use when (storage calls these; nothing else should need to):
- `settings()`: timeouts, retries, part size, staging from the environment (the table in README.md), checked:
  a bad value is an InputError naming the variable.
- `filesystem()`: the s3fs filesystem with those settings. Retries are botocore's "standard" mode (throttling,
  5xx, timeouts and dropped connections retried with exponential back-off and jitter, `SBI_S3_MAX_ATTEMPTS`
  attempts in all); s3fs's own retry loop is off, so a silent endpoint costs at most attempts x read timeout
  plus the back-off (under a minute by default) instead of s3fs's 5 x botocore's 5 x 60 s.
- `check_bucket(fs, uri)`: the first access to a bucket in a process lists one key under the URI, so a wrong
  endpoint, credentials, bucket or permission fails at once with its setting named (and not later as "file
  not found": s3fs reports a missing bucket as a missing file).
- `translated(uri, action)`: turns an S3 failure into an `InputError` (exit 2: a setting to fix, one line
  naming it) or a `TransientError` (exit 1: worth a retry, after botocore's retries); anything else passes.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sbi_core.errors import InputError, SbiError, TransientError

__all__ = ["S3Settings", "check_bucket", "classify", "filesystem", "parse_size", "settings", "split", "translated"]

MIB = 1 << 20
#: S3's smallest part of a multipart upload (all but the last).
MIN_PART_SIZE = 5 * MIB
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}


def parse_size(raw: str, variable: str) -> int:
    """'8MiB', '20Gi', '5G', '1000000' -> bytes; InputError naming the variable otherwise."""
    m = _SIZE.match(raw)
    if not m:
        raise InputError(f"{variable}={raw!r}: expected a size such as 8MiB, 20GiB or a number of bytes")
    unit = (m.group(2) or "").lower().removesuffix("b")
    return int(float(m.group(1)) * _UNITS[unit])


def _number(variable: str, default: float, *, minimum: float, integer: bool = False) -> float:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        kind = "an integer" if integer else "a number"
        raise InputError(f"{variable}={raw!r}: expected {kind} >= {minimum:g}")
    return value


@dataclass(frozen=True)
class S3Settings:
    """What `settings()` read. Defaults: 5 s to connect, 15 s to wait for an answer, 3 attempts per request
    (a silent endpoint fails after about 3 x 15 s plus at most 3 s of back-off), 8 MiB parts."""

    endpoint_url: str | None
    endpoint_variable: str | None
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    max_attempts: int = 3
    part_size: int = 8 * MIB
    streaming: bool = True
    upload_expiry: float = 86400.0

    @property
    def endpoint(self) -> str:
        """The endpoint and the variable that set it, for messages."""
        if self.endpoint_url:
            return f"{self.endpoint_url} ({self.endpoint_variable})"
        return "AWS's own endpoint (no SBI_S3_ENDPOINT_URL or AWS_ENDPOINT_URL set)"


def settings() -> S3Settings:
    """The S3 settings from the environment; InputError naming a variable whose value cannot be used."""
    variable = next((v for v in ("SBI_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL") if os.environ.get(v)), None)
    endpoint = os.environ[variable].strip() if variable else None
    if endpoint and not re.match(r"^https?://[^/\s]+", endpoint):
        raise InputError(f"{variable}={endpoint!r}: expected http(s)://host[:port]")
    part = os.environ.get("SBI_S3_PART_SIZE", "").strip()
    part_size = parse_size(part, "SBI_S3_PART_SIZE") if part else 8 * MIB
    if part_size < MIN_PART_SIZE:
        raise InputError(f"SBI_S3_PART_SIZE={part!r}: S3 parts are at least 5MiB")
    streaming = os.environ.get("SBI_S3_STREAMING", "on").strip().lower()
    if streaming not in ("on", "off", "1", "0", "true", "false", "yes", "no"):
        raise InputError(f"SBI_S3_STREAMING={streaming!r}: expected on or off")
    return S3Settings(
        endpoint_url=endpoint,
        endpoint_variable=variable,
        connect_timeout=_number("SBI_S3_CONNECT_TIMEOUT", 5.0, minimum=0.1),
        read_timeout=_number("SBI_S3_READ_TIMEOUT", 15.0, minimum=0.1),
        max_attempts=int(_number("SBI_S3_MAX_ATTEMPTS", 3, minimum=1, integer=True)),
        part_size=part_size,
        streaming=streaming in ("on", "1", "true", "yes"),
        upload_expiry=_number("SBI_S3_UPLOAD_EXPIRY", 86400.0, minimum=0.0),
    )


def split(uri: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key)."""
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key


def filesystem() -> Any:
    """The s3fs filesystem for the current settings (s3fs is imported here: it is slow to import)."""
    import s3fs

    s = settings()
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": s.endpoint_url} if s.endpoint_url else {},
        config_kwargs={"connect_timeout": s.connect_timeout, "read_timeout": s.read_timeout,
                       "retries": {"total_max_attempts": s.max_attempts, "mode": "standard"}},
    )
    fs.retries = 1  # botocore retries (with back-off); s3fs's loop would multiply the attempts
    return fs


_checked: set[tuple[int, str]] = set()


def check_bucket(fs: Any, uri: str) -> None:
    """List one key under uri once per bucket and process: a bad setting fails here, named."""
    bucket, key = split(uri)
    if (id(fs), bucket) in _checked:
        return
    with translated(uri, "list"):
        fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)
    _checked.add((id(fs), bucket))


def forget_checks() -> None:
    """Check every bucket again on next use (tests that change the settings within one process)."""
    _checked.clear()


# ---------------------------------------------------------------------------------------------- errors
def credential_source() -> str:
    """Where the credentials come from, in words (for messages; never the secret itself)."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        key = os.environ["AWS_ACCESS_KEY_ID"]
        shown = f"...{key[-4:]}" if len(key) > 8 else "(short)"
        return (f"the environment: AWS_ACCESS_KEY_ID {shown} and AWS_SECRET_ACCESS_KEY (on Kubernetes, the "
                "profile's s3_secret)")
    try:
        import botocore.session

        creds = botocore.session.Session().get_credentials()
    except Exception:  # noqa: BLE001 - only for a message
        creds = None
    if creds is None:
        return "nowhere: no AWS_ACCESS_KEY_ID, no AWS_PROFILE or ~/.aws/credentials, no pod or instance role"
    return f"botocore's {creds.method!r} provider (AWS_PROFILE, ~/.aws/credentials or a role)"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _code(exc: BaseException) -> tuple[str, int | None]:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(response.get("Error", {}).get("Code", "")), status


_TIMEOUT_NAMES = ("ReadTimeoutError", "ConnectTimeoutError", "ServerTimeoutError", "TimeoutError", "FSTimeoutError")
_BAD_INPUT_CODES = {
    "InvalidAccessKeyId": "S3 does not know the access key id: check AWS_ACCESS_KEY_ID (credentials from {creds})",
    "SignatureDoesNotMatch": "S3 rejected the signature: check AWS_SECRET_ACCESS_KEY (credentials from {creds})",
    "InvalidToken": "S3 rejected the session token: check AWS_SESSION_TOKEN (credentials from {creds})",
    "ExpiredToken": "the session token has expired: renew AWS_SESSION_TOKEN (credentials from {creds})",
    "TokenRefreshRequired": "the session token has expired: renew AWS_SESSION_TOKEN (credentials from {creds})",
    "RequestTimeTooSkewed": "S3 refused the request because this machine's clock is off: fix the clock (NTP)",
    "NoSuchBucket": "bucket {bucket!r} does not exist at {endpoint}: check the bucket in the run URI or "
                    "SBI_ARTIFACT_ROOT, and SBI_S3_ENDPOINT_URL",
    "AccessDenied": "access denied ({action} {uri}) for the credentials from {creds}: the bucket policy must allow "
                    "s3:ListBucket, GetObject, PutObject, DeleteObject and multipart uploads under the prefix",
    "AllAccessDisabled": "all access to bucket {bucket!r} is disabled: check the bucket",
    "AccountProblem": "S3 reports a problem with the account of the credentials from {creds}",
}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                    "ServiceUnavailable", "RequestLimitExceeded", "BandwidthLimitExceeded", "503", "500", "502",
                    "504"}


def classify(exc: BaseException, uri: str, action: str) -> SbiError | None:
    """The InputError or TransientError an S3 failure means, or None when it is not an S3 failure we know
    (a missing key stays FileNotFoundError: callers handle it)."""
    chain = list(_chain(exc))
    names = {type(e).__name__ for e in chain}
    codes = [c for c in (_code(e) for e in chain) if c[0] or c[1]]
    code, status = codes[0] if codes else ("", None)
    s = settings()
    bucket = split(uri)[0] if "://" in uri else uri
    fields = {"bucket": bucket, "endpoint": s.endpoint, "action": action, "uri": uri}
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        return InputError(f"no usable S3 credentials for {uri}: found {credential_source()}; set "
                          "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (on Kubernetes, the profile's s3_secret)")
    if names & {"EndpointConnectionError", "ProxyConnectionError", "SSLError", "InvalidEndpoint"}:
        return InputError(f"cannot connect to the S3 endpoint {s.endpoint} for {uri} (refused, unknown host or "
                          "TLS failure): check SBI_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL)")
    if names & set(_TIMEOUT_NAMES) or any(isinstance(e, socket.timeout) for e in chain):
        return TransientError(
            f"the S3 endpoint {s.endpoint} did not answer {action} {uri} in time ({s.max_attempts} attempts, "
            f"{s.connect_timeout:g} s to connect, {s.read_timeout:g} s to answer): check SBI_S3_ENDPOINT_URL "
            "and the store; SBI_S3_READ_TIMEOUT, SBI_S3_CONNECT_TIMEOUT and SBI_S3_MAX_ATTEMPTS set the limits")
    if code in _BAD_INPUT_CODES:
        return InputError(_BAD_INPUT_CODES[code].format(creds=credential_source(), **fields))
    if code in _TRANSIENT_CODES or (status is not None and status >= 500):
        return TransientError(f"the S3 store kept failing {action} {uri} after {s.max_attempts} attempts "
                              f"({code or status}); retry later")
    if status == 403 or (not codes and any(isinstance(e, PermissionError) for e in chain)):
        return InputError(_BAD_INPUT_CODES["AccessDenied"].format(creds=credential_source(), **fields))
    return None


@contextlib.contextmanager
def translated(uri: str, action: str) -> Iterator[None]:
    """Run an S3 call; raise the InputError / TransientError its failure means (see `classify`)."""
    try:
        yield
    except SbiError:
        raise
    except Exception as exc:
        better = classify(exc, uri, action)
        if better is None:
            raise
        raise better from exc
