"""Deployment settings: environment variables, read when needed, never baked into a DAG file.

What to set where:
- `SBI_BACKEND`: `local` (default: a subprocess on the worker) or `kubernetes` (a pod per step).
- `SBI_ARTIFACT_ROOT`: where runs write (local directory or `s3://bucket/prefix`; default `<repo>/artifacts`).
- `SBI_CONFIGS_URI`: where the shipped analysis configs are read from at run time (default `<repo>/configs`).
- `SBI_PROFILES`: a YAML file replacing `operators/profiles.yaml` (Kubernetes resource profiles).
- `SBI_CORE`: the `sbi-core` executable for the local backend (default: next to Python, else on PATH).
- `SBI_MAX_FAN_OUT`: the most mapped tasks one step fans out to (default 256); at most Airflow's
  `core.max_map_length` (1024 unless configured): a plan refuses a larger value, naming both settings.
- `SBI_TASK_TARGET_S`: seconds of work a mapped task should do at least (default 30): items are grouped by
  estimated cost (`operators.fanout`); 0 groups by count only (a task per item up to SBI_MAX_FAN_OUT).
- `SBI_COST_RATES`: seconds per work unit of a step, over the defaults of `operators.fanout.DEFAULT_RATES`,
  e.g. `generate=1e-4,train=5e-5` (a slow simulator, a large network).
- `SBI_TRAIN_SLOTS`: trainings at once (the size of the gpu profile's pool); default: the cores of the machine
  on the local backend, the profiles file's size on Kubernetes (set it there to the GPUs the site declares).
  On the local backend the cpu profile's pool follows the cores too.
- `SBI_POOL_SLOTS`: pool sizes replacing those of the profiles file, e.g. `sbi_gpu=8,sbi_highmem=2`
  (read by `operators.pools`, which `make airflow` runs; a deployment runs it once or sets pools itself).
- `SBI_CHAIN_STAGES`: `true` schedules the stage DAGs on each other's assets (LHE files -> sbi_ingest ->
  sbi_train -> sbi_infer); default `false`: they run when triggered.
- `SBI_SCHEDULE_SBI_TRAIN`, `SBI_SCHEDULE_SBI_INFER`: a cron expression (UTC) that also runs the DAG on the
  clock, from the newest asset event of its input (a nightly refit of the latest networks); default none.
- `SBI_AWS_CONN_ID`: the Airflow connection whose credentials and endpoint reach the steps and the S3 sensor
  (default `aws_default`; when that one does not exist the steps keep the worker's own environment).
- `SBI_LHE_INBOX`: an `s3://bucket/prefix` the `sbi_lhe_inbox` DAG watches for new LHE files (default none);
  `SBI_LHE_POLL` how often (seconds, default 60), `SBI_LHE_CONFIG` the config they are ingested with.
- `SBI_RETRY_DELAY`: seconds between the tries of a step (default 30).
- `SBI_STEP_THREADS`: threads each local step's PyTorch and BLAS use (`OMP_NUM_THREADS` of the subprocess;
  default 1: the local pools run as many steps at once as there are cores, and two threads per step on a busy
  machine made training 5x slower, measured); a value already in the worker's environment wins.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("local", "kubernetes")
DEFAULT_MAX_FAN_OUT = 256
DEFAULT_AWS_CONN_ID = "aws_default"
DEFAULT_RETRY_DELAY = 30
DEFAULT_TASK_TARGET_S = 30.0
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
_CRON_FIELDS = 5
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SettingError(ValueError):
    """A deployment setting has a value we cannot use; the message names the variable."""


def backend() -> str:
    """The step backend named by `SBI_BACKEND` (default `local`)."""
    value = os.environ.get("SBI_BACKEND", "local").strip().lower() or "local"
    if value not in BACKENDS:
        raise SettingError(f"SBI_BACKEND={value!r}: expected one of {', '.join(BACKENDS)}")
    return value


def artifact_root() -> str:
    """Root URI under which every run gets its own prefix."""
    return _uri(os.environ.get("SBI_ARTIFACT_ROOT") or str(REPO_ROOT / "artifacts"))


def configs_uri() -> str:
    """Location the configure step reads `<name>.yaml` from."""
    return _uri(os.environ.get("SBI_CONFIGS_URI") or str(REPO_ROOT / "configs"))


def shipped_configs_dir() -> Path:
    """Local directory whose `*.yaml` names fill the trigger form's config choice (cheap to list at parse)."""
    uri = os.environ.get("SBI_CONFIGS_URI", "")
    return Path(uri) if uri and "://" not in uri else REPO_ROOT / "configs"


def profiles_path() -> Path:
    """The resource profile file (`SBI_PROFILES` or the one shipped next to this module)."""
    return Path(os.environ.get("SBI_PROFILES") or Path(__file__).with_name("profiles.yaml"))


def max_fan_out() -> int:
    """Upper bound on mapped task instances per step."""
    raw = os.environ.get("SBI_MAX_FAN_OUT", str(DEFAULT_MAX_FAN_OUT))
    if not raw.isdigit() or int(raw) < 1:
        raise SettingError(f"SBI_MAX_FAN_OUT={raw!r}: expected a positive integer")
    return int(raw)


def task_target_s() -> float:
    """`SBI_TASK_TARGET_S`: seconds of work each mapped task should do at least (0: group by count only)."""
    raw = os.environ.get("SBI_TASK_TARGET_S", "").strip() or str(DEFAULT_TASK_TARGET_S)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise SettingError(f"SBI_TASK_TARGET_S={raw!r}: expected a number of seconds >= 0")
    return value


def cost_rates() -> dict[str, float]:
    """`SBI_COST_RATES=step=seconds,...`: seconds per work unit of a step (default: none, the shipped rates)."""
    raw = os.environ.get("SBI_COST_RATES", "").strip()
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, rate = item.partition("=")
        try:
            value = float(rate)
        except ValueError:
            value = math.nan
        if not name.strip() or not math.isfinite(value) or value < 0:
            raise SettingError(f"SBI_COST_RATES={raw!r}: expected step=seconds[,step=seconds...] with seconds >= 0")
        out[name.strip()] = value
    return out


def train_slots() -> int | None:
    """`SBI_TRAIN_SLOTS`, else the machine's cores on the local backend, else None (the profiles file's size)."""
    raw = os.environ.get("SBI_TRAIN_SLOTS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise SettingError(f"SBI_TRAIN_SLOTS={raw!r}: expected a positive integer")
        return int(raw)
    return local_cores()


def local_cores() -> int | None:
    """The machine's cores when steps run on it (the local backend: the cpu and training pools follow them), else None."""
    return (os.cpu_count() or 1) if backend() == "local" else None


def pool_slots() -> dict[str, int]:
    """`SBI_POOL_SLOTS=name=slots,name=slots`: pool sizes that replace the profiles file's (default: none)."""
    raw = os.environ.get("SBI_POOL_SLOTS", "").strip()
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, slots = item.partition("=")
        if not name.strip() or not slots.strip().isdigit() or int(slots) < 1:
            raise SettingError(f"SBI_POOL_SLOTS={raw!r}: expected name=slots[,name=slots...] with slots >= 1")
        out[name.strip()] = int(slots)
    return out


def chain_stages() -> bool:
    """`SBI_CHAIN_STAGES`: whether the stage DAGs are scheduled on each other's assets (default false)."""
    raw = os.environ.get("SBI_CHAIN_STAGES", "").strip().lower()
    if raw not in _TRUE + _FALSE:
        raise SettingError(f"SBI_CHAIN_STAGES={raw!r}: expected true or false")
    return raw in _TRUE


def schedule_cron(dag_id: str) -> str | None:
    """`SBI_SCHEDULE_<DAG ID>` (e.g. `SBI_SCHEDULE_SBI_INFER="0 3 * * *"`): the DAG's cron, or None."""
    name = f"SBI_SCHEDULE_{dag_id.upper()}"
    raw = " ".join(os.environ.get(name, "").split())
    if not raw:
        return None
    fields = raw.split(" ")
    if raw.startswith("@") and len(fields) == 1:
        return raw  # @daily, @hourly...: Airflow checks the preset
    if len(fields) != _CRON_FIELDS:
        raise SettingError(f"{name}={raw!r}: expected a cron expression of {_CRON_FIELDS} fields, e.g. '0 3 * * *'")
    return raw


def aws_conn_id() -> tuple[str, bool]:
    """(`SBI_AWS_CONN_ID` or `aws_default`, whether the setting named it: then the connection must exist)."""
    raw = os.environ.get("SBI_AWS_CONN_ID", "").strip()
    return (raw, True) if raw else (DEFAULT_AWS_CONN_ID, False)


def lhe_inbox() -> str | None:
    """`SBI_LHE_INBOX`: the `s3://bucket/prefix` watched for new LHE files (no trailing slash), or None."""
    raw = os.environ.get("SBI_LHE_INBOX", "").strip().rstrip("/")
    if not raw:
        return None
    if not raw.startswith("s3://") or len(raw.split("/")) < 4 or not raw.split("/")[2]:
        raise SettingError(f"SBI_LHE_INBOX={raw!r}: expected s3://bucket/prefix")
    return raw


def lhe_poll(default: int) -> int:
    """`SBI_LHE_POLL`: seconds between two listings of the LHE inbox by the triggerer."""
    raw = os.environ.get("SBI_LHE_POLL", str(default)).strip()
    if not raw.isdigit() or int(raw) < 1:
        raise SettingError(f"SBI_LHE_POLL={raw!r}: expected a positive number of seconds")
    return int(raw)


def lhe_config() -> str | None:
    """`SBI_LHE_CONFIG`: the analysis config (a file or s3:// URI) that files from the inbox are ingested with
    (default: the sbi_ingest form's default config)."""
    return os.environ.get("SBI_LHE_CONFIG", "").strip() or None


def retry_delay() -> int:
    """`SBI_RETRY_DELAY`: seconds between two tries of a step (default 30)."""
    raw = os.environ.get("SBI_RETRY_DELAY", str(DEFAULT_RETRY_DELAY)).strip()
    if not raw.isdigit():
        raise SettingError(f"SBI_RETRY_DELAY={raw!r}: expected a number of seconds")
    return int(raw)


def step_threads() -> int:
    """OMP_NUM_THREADS of a local step (SBI_STEP_THREADS, default 1)."""
    raw = os.environ.get("SBI_STEP_THREADS", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise SettingError(f"SBI_STEP_THREADS={raw!r}: expected a positive integer")
    return int(raw)


def sbi_core_executable() -> str:
    """`SBI_CORE`, else `sbi-core` next to the running interpreter (the venv's bin), else on PATH."""
    explicit = os.environ.get("SBI_CORE")
    if explicit:
        return explicit
    beside = Path(sys.executable).with_name("sbi-core")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("sbi-core")
    if not found:
        raise SettingError("sbi-core not found next to Python nor on PATH; install the package or set SBI_CORE")
    return found


def run_slug(run_id: str) -> str:
    """A path-safe name for a run id; a short hash keeps distinct run ids distinct after sanitising."""
    slug = _UNSAFE.sub("_", run_id).lstrip(".")
    if slug != run_id or not slug:
        slug = f"{slug}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}".lstrip("-")
    return slug


def run_uri(dag_id: str, run_id: str, root: str | None = None) -> str:
    """`{root}/{dag_id}/{sanitised run_id}`: every run writes under its own prefix."""
    return f"{(root or artifact_root()).rstrip('/')}/{run_slug(dag_id)}/{run_slug(run_id)}"


def _uri(value: str) -> str:
    """Remote URIs unchanged; local paths made absolute (the CLI wants absolute paths)."""
    return value.rstrip("/") if "://" in value else str(Path(value).expanduser().resolve())
