"""MLflow tracking: the ONLY module that imports mlflow (lazily, inside functions).

What to use when:
- `log_network(layout, cfg, network_id, params, history, artifacts)`: after each trained network (train step):
  a child run with the network's parameters, per-epoch metrics (step = epoch) and its files as artefacts.
- `log_ensemble(layout, cfg, method, head, variation, members, metrics)`: after an ensemble is formed: a child
  run, a registered model version (`registered_model_name`) and the alias `ENSEMBLE_ALIAS` pointing at it.
- `log_report(layout, cfg, metrics, plots)`: the evaluation report (metrics and PNG plots).
- `log_fit(layout, cfg, results, artifacts)`: the inference report (fit results and plots).
- `tracking_uri(layout)`: where a run's tracking goes (None: tracking is off).
- `log_study_round(...)` / `log_study_results(...)`: a study's rounds and results (`sbi_core.studies`): a parent
  run per study in the experiment `sbi-study-<kind>`, a child run per round, a metric per evaluated point.
- `register_study_model(...)`: a network a study chose (the best of an HPO segment), registered with an alias.

Structure: one experiment per analysis (`cfg.name`); one parent run per pipeline run, named by a marker file in
the run (`RUN/tracking/parent-<server digest>.json`, created atomically, so every process of a DAG run logs under
the same parent even when several start at once on a fresh server; the parent also carries the tag `sbi.run_key`,
a digest of the run URI); child runs
carry the MLflow tag `mlflow.parentRunId` (nesting across processes). The parent is tagged with the run URI,
the config hash and, when Airflow runs the step, the DAG id and DAG run id (`AIRFLOW_CTX_DAG_ID`,
`AIRFLOW_CTX_DAG_RUN_ID`, which Airflow exports into task processes and the operators pass to pods).

Where it goes: `MLFLOW_TRACKING_URI` when set (a server); otherwise an embedded SQLite store created on first use
at `<base>/mlflow/mlflow.db` with artefacts in `<base>/mlflow/artifacts`, where base is `SBI_ARTIFACT_ROOT` when
the run lies under it, else the run's parent directory. Processes sharing the embedded store take a file lock
around each call (SQLite and MLflow's schema creation do not like concurrent writers). A run on an object
store (s3://) without `MLFLOW_TRACKING_URI` is not tracked (a SQLite file cannot live there): a deployment points
MLFLOW_TRACKING_URI at an `mlflow server` (PostgreSQL store, S3 artifacts; docker-compose runs one, and the
Kubernetes profiles pass the worker's MLFLOW_TRACKING_URI to every pod). `SBI_TRACKING=off` turns tracking off.

Tracking never raises into a step: the first failure (an unreachable server, a locked store) is logged ONCE as a
warning and tracking stays off for the rest of the process; the files in storage remain the record. Requests to
a server use a short timeout and one retry unless `MLFLOW_HTTP_REQUEST_TIMEOUT` / `_MAX_RETRIES` say otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sbi_core import storage
from sbi_core.layout import RunLayout

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig

log = logging.getLogger(__name__)

#: Alias the newest ensemble version of a registered model carries (`latest` is reserved by MLflow).
ENSEMBLE_ALIAS = "current"
#: Tags this module sets (besides MLflow's own `mlflow.parentRunId` / `mlflow.runName`).
TAG_KIND, TAG_RUN_KEY, TAG_RUN_URI, TAG_CONFIG_HASH = "sbi.kind", "sbi.run_key", "sbi.run_uri", "sbi.config_hash"
TAG_DAG_ID, TAG_DAG_RUN_ID, TAG_NAME = "sbi.dag_id", "sbi.dag_run_id", "sbi.name"
#: Environment variables Airflow exports into task processes (and the operators pass to pods).
AIRFLOW_ENV = {TAG_DAG_ID: "AIRFLOW_CTX_DAG_ID", TAG_DAG_RUN_ID: "AIRFLOW_CTX_DAG_RUN_ID"}
#: Defaults for MLflow's HTTP client (only where the environment does not set them): fail fast when unreachable.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
_MAX_FLAT = 500  # most metrics or params flattened out of one report dict
_PARAM_LEN = 6000  # MLflow's limit on a param value

_off_reason: str | None = None  # set on the first failure: later calls return at once
_parents: dict[tuple[str, str], str] = {}  # (tracking URI, run key) -> parent run id, per process
_clients: dict[str, Any] = {}  # tracking URI -> MlflowClient, per process

F = TypeVar("F", bound=Callable[..., None])


def _never_raises(fn: F) -> F:
    """Run a tracking call; on any failure warn once, turn tracking off for this process, return None."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        global _off_reason
        if _off_reason is not None or os.environ.get("SBI_TRACKING", "").lower() in ("off", "0", "false", "no"):
            return None
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must never fail a step
            _off_reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            log.warning("MLflow tracking is off for this process (%s failed: %s); the files in storage remain the "
                        "record", fn.__name__, _off_reason)
        return None

    return wrapper  # type: ignore[return-value]


def reset() -> None:
    """Forget a previous failure and the cached parent runs (tests; a long-lived process after a server restart)."""
    global _off_reason
    _off_reason = None
    _parents.clear()
    _clients.clear()


# ---------------------------------------------------------------------------------------------- where it goes
def _embedded_base(layout: RunLayout) -> str:
    root = os.environ.get("SBI_ARTIFACT_ROOT")
    if root and not storage.is_remote(root):
        base = storage.normalize(root)
        if layout.root == base or layout.root.startswith(base.rstrip("/") + "/"):
            return base
    return layout.root.rstrip("/").rsplit("/", 1)[0] if storage.is_remote(layout.root) else str(Path(layout.root).parent)


def tracking_uri(layout: RunLayout) -> str | None:
    """The tracking URI for this run: MLFLOW_TRACKING_URI, else the embedded SQLite store; None when off."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    base = _embedded_base(layout)
    if storage.is_remote(base):
        return None
    return "sqlite:///" + str(Path(base) / "mlflow" / "mlflow.db")


@dataclass(frozen=True)
class _Store:
    uri: str
    artifact_location: str | None  # for a new experiment (embedded store only)
    lock_path: Path | None  # embedded store: serialise processes


def _store(layout: RunLayout) -> _Store:
    uri = tracking_uri(layout)
    if uri is None:
        raise RuntimeError(f"run {layout.root} is on an object store: set MLFLOW_TRACKING_URI to an mlflow server "
                           "to track it (docs/storage.md)")
    if not uri.startswith("sqlite:///") or os.environ.get("MLFLOW_TRACKING_URI"):
        return _Store(uri, None, None)
    directory = Path(uri.removeprefix("sqlite:///")).parent
    directory.mkdir(parents=True, exist_ok=True)
    return _Store(uri, (directory / "artifacts").as_uri(), directory / ".lock")


@contextlib.contextmanager
def _locked(store: _Store) -> Iterator[None]:
    if store.lock_path is None:
        yield
        return
    with open(store.lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _client(store: _Store) -> Any:
    """One MlflowClient per store and process (building one checks the store's schema: seconds on SQLite)."""
    if store.uri not in _clients:
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        from mlflow.tracking import MlflowClient

        _clients[store.uri] = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
    return _clients[store.uri]


def run_key(layout: RunLayout) -> str:
    """The tag value that finds a pipeline run's parent MLflow run again (a digest of the run URI)."""
    return hashlib.sha256(layout.root.encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class _Session:
    client: Any
    experiment_id: str
    parent_id: str
    key: str


@contextlib.contextmanager
def _session(layout: RunLayout, cfg: AnalysisConfig) -> Iterator[_Session]:
    """The client, the analysis' experiment and this pipeline run's parent run (created on first use)."""
    store = _store(layout)
    with _locked(store):
        client = _client(store)
        experiment_id = _experiment(client, cfg.name, store.artifact_location)
        key = run_key(layout)
        parent = _parents.get((store.uri, key)) or _parent(client, experiment_id, layout, cfg, key, store.uri)
        _parents[(store.uri, key)] = parent
        yield _Session(client, experiment_id, parent, key)
        client.set_terminated(parent, "FINISHED")  # end time = the pipeline run's last logged step


def _experiment(client: Any, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location,
                                                tags={"sbi.analysis": name}))
        except Exception:  # noqa: BLE001 - another process created it meanwhile
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return str(exp.experiment_id)


def _find_runs(client: Any, experiment_id: str, tags: Mapping[str, str]) -> list[Any]:
    """Active runs with every given tag, oldest first (tag values here are digests and run ids: no quoting)."""
    clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    runs = client.search_runs([experiment_id], filter_string=" and ".join(clauses), max_results=1000)
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def parent_marker(layout: RunLayout, tracking: str) -> str:
    """The file in the run that names the run's parent MLflow run on one tracking server (created once)."""
    digest = hashlib.sha256(tracking.encode()).hexdigest()[:12]
    return storage.join(layout.root, "tracking", f"parent-{digest}.json")


def _marked_parent(client: Any, marker: str) -> str | None:
    """The parent run the marker names, if the server still has it active; None when there is no marker."""
    if not storage.exists(marker):
        return None
    run_id = str(storage.read_json(marker)["run_id"])
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - deleted on the server (or another server with the same URI)
        run = None
    if run is None or run.info.lifecycle_stage != "active":
        raise RuntimeError(f"{marker} names parent run {run_id}, which the tracking server no longer has: "
                           "remove the marker to start a new parent")
    return run_id


def _parent(client: Any, experiment_id: str, layout: RunLayout, cfg: AnalysisConfig, key: str,
            tracking: str) -> str:
    """The pipeline run's parent run, race-free across processes and machines: a marker in the run's storage
    (`parent_marker`) names it. Without one, this process creates a parent run and then creates the marker only
    if it is still absent (an atomic create: a link locally, a conditional PUT on S3); a process that loses the
    race deletes its own run and takes the marker's. So steps that start at once on a fresh server share one."""
    marker = parent_marker(layout, tracking)
    found = _marked_parent(client, marker)
    if found is not None:
        return found
    from sbi_core.config import config_hash

    tags = {TAG_KIND: "pipeline", TAG_RUN_KEY: key, TAG_RUN_URI: layout.root, TAG_CONFIG_HASH: config_hash(cfg),
            TAG_NAME: cfg.name, "mlflow.runName": layout.root.rstrip("/").rsplit("/", 1)[-1]}
    tags.update({tag: os.environ[env] for tag, env in AIRFLOW_ENV.items() if os.environ.get(env)})
    ours = str(client.create_run(experiment_id, tags=tags).info.run_id)
    record = {"run_id": ours, "experiment_id": experiment_id, "tracking_uri": tracking}
    if not storage.create_if_absent(marker, (json.dumps(record, sort_keys=True) + "\n").encode()):
        client.delete_run(ours)
        return str(storage.read_json(marker)["run_id"])
    from sbi_core.config import config_to_yaml

    _log_text(client, ours, "config.yaml", config_to_yaml(cfg))
    return ours


def _child(session: _Session, kind: str, name: str, extra_tags: Mapping[str, str] | None = None) -> str:
    """A fresh child run of the parent; an earlier one with the same kind and name (a retried task) is deleted,
    so the last attempt is the record."""
    ident = hashlib.sha256(f"{kind}:{name}".encode()).hexdigest()[:24]
    for old in _find_runs(session.client, session.experiment_id,
                          {"mlflow.parentRunId": session.parent_id, "sbi.child": ident}):
        session.client.delete_run(old.info.run_id)
    tags = {"mlflow.parentRunId": session.parent_id, "mlflow.runName": name, TAG_KIND: kind, "sbi.child": ident,
            TAG_RUN_KEY: session.key, **(extra_tags or {})}
    return str(session.client.create_run(session.experiment_id, tags=tags).info.run_id)


def _log_text(client: Any, run_id: str, name: str, text: str, artifact_path: str | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="sbi-mlflow-") as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def _log_files(client: Any, run_id: str, uris: Sequence[str], artifact_path: str | None = None) -> None:
    for uri in uris:
        with storage.local_copy(uri) as path:
            client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def _log_batch(client: Any, run_id: str, metrics: Sequence[Any] = (), params: Sequence[Any] = ()) -> None:
    """MLflow's batch limits: 1000 metrics, 100 params per call."""
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=list(params[i:i + 100]))
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=list(metrics[i:i + 1000]))


_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': [1, 2]}} -> {'a.b.0': 1, 'a.b.1': 2}: keys made MLflow-safe, leaves kept as they are."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list | tuple) and obj and all(isinstance(v, int | float | Mapping | list | tuple)
                                                        and not isinstance(v, bool) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    else:
        out[_KEY_BAD.sub("_", prefix or "value")[:250]] = obj
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _metrics_and_params(values: Mapping[str, Any], step: int = 0) -> tuple[list[Any], list[Any]]:
    """Numbers become metrics, everything else a param (as text); at most _MAX_FLAT of each."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    flat = flatten(values)
    metrics = [Metric(k, float(v), now, step) for k, v in flat.items() if _is_number(v)][:_MAX_FLAT]
    params = [Param(k, _text(v)) for k, v in flat.items() if not _is_number(v) and v is not None][:_MAX_FLAT]
    return metrics, params


def _text(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s[:_PARAM_LEN]


def registered_model_name(cfg: AnalysisConfig, method: str, head: str, variation: str) -> str:
    """Registered model of an ensemble: `<analysis>.<method>.<head>.<variation>`, characters other than letters,
    digits, '_', '-' and '.' replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", f"{cfg.name}.{method}.{head}.{variation}")


# ---------------------------------------------------------------------------------------------- public API
@_never_raises
def log_network(layout: RunLayout, cfg: AnalysisConfig, network_id: str, params: Mapping[str, Any],
                history: Sequence[Mapping[str, Any]], artifacts: Sequence[str], *, status: str = "ok") -> None:
    """A child run for one trained network: params (flattened), every numeric history column as a metric with
    step = epoch, the files (`artifacts`: URIs, e.g. model.pt) as artefacts; status `ok` or `failed`."""
    from mlflow.entities import Metric, Param

    with _session(layout, cfg) as s:
        run_id = _child(s, "network", network_id, {"sbi.network_id": network_id})
        flat = flatten(params)
        param_list = [Param(k, _text(v)) for k, v in flat.items() if v is not None][:_MAX_FLAT]
        now = int(time.time() * 1000)
        metrics = []
        for i, row in enumerate(history):
            step = int(row.get("epoch", i))
            for k, v in row.items():
                if k != "epoch" and _is_number(v):
                    metrics.append(Metric(_KEY_BAD.sub("_", k), float(v), now, step))
        if history:
            last = {k: v for k, v in history[-1].items() if _is_number(v)}
            finite = [r.get("val_loss") for r in history if _is_number(r.get("val_loss")) and math.isfinite(r["val_loss"])]
            if finite:
                metrics.append(Metric("best_val_loss", float(min(finite)), now, int(last.get("epoch", 0))))
        _log_batch(s.client, run_id, metrics, param_list)
        _log_files(s.client, run_id, artifacts)
        s.client.set_terminated(run_id, "FINISHED" if status == "ok" else "FAILED")


@_never_raises
def log_ensemble(layout: RunLayout, cfg: AnalysisConfig, method: str, head: str, variation: str,
                 members: Sequence[str], metrics: Mapping[str, Any]) -> None:
    """A child run for an ensemble (its members and metrics, `ensemble/ensemble.json` as artefact), registered as
    a new version of `registered_model_name(...)` with the alias ENSEMBLE_ALIAS moved to it. A retry with the
    same members reuses its version instead of registering another."""
    name = registered_model_name(cfg, method, head, variation)
    members = list(members)
    with _session(layout, cfg) as s:
        c = s.client
        member_text = ",".join(members)
        digest = hashlib.sha256(member_text.encode()).hexdigest()[:24]
        for version in c.search_model_versions(f"name = '{name}'"):
            if version.tags.get(TAG_RUN_KEY) == s.key and version.tags.get("sbi.members") == digest:
                c.set_registered_model_alias(name, ENSEMBLE_ALIAS, version.version)
                return
        label = f"ensemble-{method}-{head}-{variation}"
        run_id = _child(s, "ensemble", label, {"sbi.method": method, "sbi.head": head, "sbi.variation": variation})
        m, p = _metrics_and_params(metrics)
        from mlflow.entities import Param

        p += [Param("members", _text(member_text)), Param("n_members", str(len(members)))]
        _log_batch(c, run_id, m, p)
        record = {"analysis": cfg.name, "run": layout.root, "method": method, "head": head, "variation": variation,
                  "members": members, "metrics": dict(metrics)}
        _log_text(c, run_id, "ensemble.json", json.dumps(record, indent=2, default=str), artifact_path="ensemble")
        c.set_terminated(run_id, "FINISHED")
        try:
            c.create_registered_model(name, tags={"sbi.analysis": cfg.name, "sbi.method": method, "sbi.head": head,
                                                  "sbi.variation": variation})
        except Exception:  # noqa: BLE001 - it exists already (another process, an earlier run)
            c.get_registered_model(name)
        version = c.create_model_version(name, source=f"runs:/{run_id}/ensemble", run_id=run_id,
                                         tags={TAG_RUN_KEY: s.key, TAG_RUN_URI: layout.root, "sbi.members": digest})
        c.set_registered_model_alias(name, ENSEMBLE_ALIAS, version.version)


@_never_raises
def log_report(layout: RunLayout, cfg: AnalysisConfig, metrics: Mapping[str, Any], plots: Sequence[str],
               artifacts: Sequence[str] = ()) -> None:
    """A child run `evaluation`: the report's numbers (flattened: numbers as metrics, text as params), the PNG
    plots under `plots/` and other files (metrics.json) at the top of its artefacts."""
    with _session(layout, cfg) as s:
        run_id = _child(s, "evaluation", "evaluation")
        m, p = _metrics_and_params(metrics)
        _log_batch(s.client, run_id, m, p)
        _log_files(s.client, run_id, plots, artifact_path="plots")
        _log_files(s.client, run_id, artifacts)
        s.client.set_terminated(run_id, "FINISHED")


@_never_raises
def log_fit(layout: RunLayout, cfg: AnalysisConfig, results: Mapping[str, Any], artifacts: Sequence[str]) -> None:
    """A child run `inference`: the fit results (flattened: numbers as metrics, text as params) and files (plots,
    results.json) as artefacts; PNG files go under `plots/`."""
    with _session(layout, cfg) as s:
        run_id = _child(s, "inference", "inference")
        m, p = _metrics_and_params(results)
        _log_batch(s.client, run_id, m, p)
        _log_files(s.client, run_id, [a for a in artifacts if a.lower().endswith(".png")], artifact_path="plots")
        _log_files(s.client, run_id, [a for a in artifacts if not a.lower().endswith(".png")])
        s.client.set_terminated(run_id, "FINISHED")


# ---------------------------------------------------------------------------------------------- studies
#: A study's MLflow runs: one experiment per study kind, a parent run per study (found again by this tag, a
#: digest of the study URI), a child run per round with a metric per evaluated point (step = its index in the
#: round), the final results and plots on the parent.
TAG_STUDY_KEY = "sbi.study_key"


def _study_experiment(config: Mapping[str, Any]) -> str:
    return f"sbi-study-{config.get('kind', 'study')}"


@contextlib.contextmanager
def _study_session(study_uri: str, name: str, config: Mapping[str, Any]) -> Iterator[_Session]:
    """The client, the kind's experiment and the study's parent run (created, with the config as params, on
    first use)."""
    layout = RunLayout(study_uri)
    store = _store(layout)
    key = hashlib.sha256(layout.root.encode()).hexdigest()[:24]
    with _locked(store):
        client = _client(store)
        experiment_id = _experiment(client, _study_experiment(config), store.artifact_location)
        parent = _parents.get((store.uri, "study:" + key))
        if parent is None:
            found = _find_runs(client, experiment_id, {TAG_KIND: "study", TAG_STUDY_KEY: key})
            if found:
                parent = str(found[0].info.run_id)
            else:
                tags = {TAG_KIND: "study", TAG_STUDY_KEY: key, "sbi.study_uri": layout.root, TAG_NAME: name,
                        "mlflow.runName": name}
                tags.update({tag: os.environ[env] for tag, env in AIRFLOW_ENV.items() if os.environ.get(env)})
                parent = str(client.create_run(experiment_id, tags=tags).info.run_id)
                _log_batch(client, parent, params=_metrics_and_params({"study": dict(config)})[1])
            _parents[(store.uri, "study:" + key)] = parent
        yield _Session(client, experiment_id, parent, key)


@_never_raises
def log_study_round(study_uri: str, name: str, config: Mapping[str, Any], record: Mapping[str, Any]) -> None:
    """A child run `round-NNNN` of the study's parent: each evaluated point's `metrics` (step = its index in the
    round), the round's headline figures, its cost and failures; the headline also on the parent (step = round).
    A repeated aggregate of the same round replaces its child run."""
    from mlflow.entities import Metric, Param

    r = int(record["round"])
    with _study_session(study_uri, name, config) as s:
        run_id = _child(s, "round", f"round-{r:04d}", {"sbi.round": str(r)})
        now = int(time.time() * 1000)
        metrics = [Metric(_KEY_BAD.sub("_", k), float(v), now, i) for i, e in enumerate(record.get("entries", []))
                   for k, v in (e.get("metrics") or {}).items() if _is_number(v) and math.isfinite(v)]
        headline = {k: v for k, v in flatten(record["decision"].get("summary", {})).items()
                    if _is_number(v) and math.isfinite(v)}
        metrics += [Metric(k, float(v), now, r) for k, v in headline.items()]
        metrics += [Metric("cost", float(record.get("cost", 0)), now, r),
                    Metric("failed_points", float(len(record.get("failed", []))), now, r)]
        params = [Param("decision", record["decision"]["action"]), Param("reason", _text(record["decision"]["reason"]))]
        _log_batch(s.client, run_id, metrics, params)
        s.client.set_terminated(run_id, "FINISHED")
        _log_batch(s.client, s.parent_id, [Metric(k, float(v), now, r) for k, v in headline.items()]
                   + [Metric("budget_used", float(record["state"]["budget_used"]), now, r)])


@_never_raises
def log_study_results(study_uri: str, name: str, config: Mapping[str, Any], results: Mapping[str, Any],
                      artifacts: Sequence[str]) -> None:
    """The study's final results on its parent run (the headline numbers as metrics `result.<name>`, the status
    and reason as tags), the plots under `plots/` and results.json; the parent ends FINISHED, or KILLED (stopped) or FAILED."""
    with _study_session(study_uri, name, config) as s:
        m, _ = _metrics_and_params({"result": results.get("headline", {})}, step=int(results.get("rounds", 0)))
        _log_batch(s.client, s.parent_id, m)
        s.client.set_tag(s.parent_id, "sbi.status", str(results.get("status", "")))
        s.client.set_tag(s.parent_id, "sbi.reason", _text(results.get("reason", ""))[:5000])
        _log_files(s.client, s.parent_id, [a for a in artifacts if a.lower().endswith(".png")], artifact_path="plots")
        _log_files(s.client, s.parent_id, [a for a in artifacts if not a.lower().endswith(".png")])
        status = {"stopped": "KILLED", "failed": "FAILED"}.get(str(results.get("status")), "FINISHED")
        s.client.set_terminated(s.parent_id, status)


@_never_raises
def register_study_model(study_uri: str, name: str, config: Mapping[str, Any], model_name: str,
                         artifacts: Sequence[str], metrics: Mapping[str, Any], params: Mapping[str, Any],
                         alias: str) -> None:
    """A study's chosen network (e.g. the best of an HPO segment): a child run `model-<model_name>` of the study's
    parent with its metrics, params and files (`model/`), registered as a version of `model_name` with `alias`
    moved to it. A repeated call for the same files reuses its version."""
    from mlflow.entities import Param

    digest = hashlib.sha256(json.dumps([list(artifacts), dict(params)], sort_keys=True, default=str).encode()
                            ).hexdigest()[:24]
    model_name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", model_name)
    with _study_session(study_uri, name, config) as s:
        c = s.client
        for version in c.search_model_versions(f"name = '{model_name}'"):
            if version.tags.get("sbi.study_key") == s.key and version.tags.get("sbi.model_digest") == digest:
                c.set_registered_model_alias(model_name, alias, version.version)
                return
        run_id = _child(s, "model", f"model-{model_name}", {"sbi.model": model_name})
        m, _ = _metrics_and_params({k: v for k, v in metrics.items() if v is not None})
        _log_batch(c, run_id, m, [Param(k, _text(v)) for k, v in flatten(dict(params)).items()][:_MAX_FLAT])
        _log_files(c, run_id, artifacts, artifact_path="model")
        c.set_terminated(run_id, "FINISHED")
        try:
            c.create_registered_model(model_name, tags={"sbi.study_uri": study_uri})
        except Exception:  # noqa: BLE001 - it exists already
            c.get_registered_model(model_name)
        version = c.create_model_version(model_name, source=f"runs:/{run_id}/model", run_id=run_id,
                                         tags={"sbi.study_key": s.key, "sbi.model_digest": digest})
        c.set_registered_model_alias(model_name, alias, version.version)
