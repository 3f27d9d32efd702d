"""Run this project's Airflow 3 on 127.0.0.1 with embedded defaults (`make airflow`); Ctrl-C stops all of it.

Embedded defaults: AIRFLOW_HOME `<repo>/.airflow`, SQLite, LocalExecutor, the repo's `dags/`, no
examples, the local step backend, the pools of the resource profiles (`operators.pools`; sizes from
`operators/profiles.yaml`, the cpu and training pools follow the cores, `SBI_POOL_SLOTS` overrides) and
Airflow's `parallelism` / `max_active_tasks_per_dag` sized to fill them (`operators.pools.concurrency_env`). `LocalAirflow` is also what the integration tests
and the DAG benchmark start: api-server, scheduler, dag-processor (and triggerer), each in its own
process group.

The production set-up, with the same launcher: `SBI_AIRFLOW_DB=postgresql://USER@HOST:5432/DB` (the
metadata database; `postgresql+psycopg2://` is used) and `SBI_EXECUTOR=celery` (the CeleryExecutor with a
`celery-worker` component; broker `SBI_CELERY_BROKER`, default `redis://127.0.0.1:6379/0`; Celery's
results go to the metadata database). Celery needs PostgreSQL (Airflow refuses SQLite with it).

Loopback only: the API server binds 127.0.0.1. The scheduler's and triggerer's log servers (ports
8793/8794) have no host setting in Airflow 3.3 (`airflow.utils.serve_logs` binds every interface), so
they are not started (`--skip-serve-logs`): on one machine the API server reads the task logs from
the files under `$AIRFLOW_HOME/logs` itself. `listening_sockets()` shows what the components listen on.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO / ".airflow"
DEFAULT_ARTIFACTS = REPO / "artifacts"
BIN = Path(sys.executable).parent
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
WORKER = "celery-worker"
# The command of each component; no log server on all interfaces (see the module docstring).
COMPONENT_COMMANDS = {
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "triggerer": ("triggerer", "--skip-serve-logs"),
    WORKER: ("celery", "worker", "--skip-serve-logs"),
}
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


class SetupError(ValueError):
    """A setting of the Airflow set-up (database, executor) has a value we cannot use; names the variable."""


def database_url(home: Path, raw: str | None = None) -> str:
    """`SBI_AIRFLOW_DB` as the SQLAlchemy URL Airflow wants (PostgreSQL through psycopg2), else SQLite in `home`."""
    raw = (os.environ.get("SBI_AIRFLOW_DB", "") if raw is None else raw).strip()
    if not raw:
        return f"sqlite:///{home / 'airflow.db'}"
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme not in ("postgresql", "postgres", "postgresql+psycopg2", "sqlite"):
        raise SetupError(f"SBI_AIRFLOW_DB={raw!r}: expected postgresql://user@host:port/database (or sqlite:///path)")
    return raw if scheme == "sqlite" else f"postgresql+psycopg2://{rest}"


def executor_env(executor: str, database: str, broker: str | None = None) -> dict[str, str]:
    """Airflow settings of `SBI_EXECUTOR` (`local`, the default, or `celery`) on `database`."""
    if executor not in EXECUTORS:
        raise SetupError(f"SBI_EXECUTOR={executor!r}: expected one of {', '.join(EXECUTORS)}")
    env = {"AIRFLOW__CORE__EXECUTOR": EXECUTORS[executor]}
    if executor == "celery":
        if database.startswith("sqlite"):
            raise SetupError("SBI_EXECUTOR=celery needs a PostgreSQL metadata database: set SBI_AIRFLOW_DB")
        env["AIRFLOW__CELERY__BROKER_URL"] = broker or DEFAULT_BROKER
        env["AIRFLOW__CELERY__RESULT_BACKEND"] = f"db+{database}"  # through psycopg2, as the metadata
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def embedded_env(
    home: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_ports: tuple[int, int] = (8793, 8794),
    dags_folder: Path = REPO / "dags",
    base: dict[str, str] | None = None,
    database: str | None = None,
    executor: str | None = None,
) -> dict[str, str]:
    """Environment for every Airflow process (`base` defaults to os.environ): the embedded SQLite and
    LocalExecutor, or the `database` URL and `executor` given (default: `SBI_AIRFLOW_DB`, `SBI_EXECUTOR`)."""
    env = dict(os.environ if base is None else base)
    database = database_url(home, env.get("SBI_AIRFLOW_DB", "") if database is None else database)
    executor = (executor or env.get("SBI_EXECUTOR") or "local").strip().lower()
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            **executor_env(executor, database, env.get("SBI_CELERY_BROKER")),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
            "AIRFLOW__API__HOST": host,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://{host}:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{host}:{port}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_ports[0]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(log_ports[1]),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": host,  # off by default; loopback if enabled
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    env.setdefault("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False")
    env.setdefault("SBI_BACKEND", "local")
    from operators.pools import concurrency_env

    env.update(concurrency_env(env))  # parallelism to fill every pool (ones set by the caller are kept)
    return env


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade the metadata database (idempotent, a few seconds)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)


def create_pools(env: dict[str, str]) -> None:
    """Create or update the pools the resource profiles name (`python -m operators.pools --import`)."""
    subprocess.run([sys.executable, "-m", "operators.pools", "--import"], env=env, cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)


def listening_sockets(pids: list[int]) -> list[tuple[str, int, int]]:
    """(local address, port, pid) of every TCP socket in LISTEN state that one of `pids` holds (Linux /proc)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.append((_address(address, width), int(port, 16), inodes[fields[9]]))
    return found


def _address(hex_address: str, width: int) -> str:
    """A /proc/net/tcp{,6} address (little-endian 32-bit words) as text."""
    raw = b"".join(bytes.fromhex(hex_address[i : i + 8])[::-1] for i in range(0, width, 8))
    return str(ipaddress.ip_address(raw))


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


@dataclass
class LocalAirflow:
    """Airflow components started as separate process groups; a context manager that always stops them."""

    home: Path = DEFAULT_HOME
    host: str = "127.0.0.1"
    port: int = 8080
    log_ports: tuple[int, int] = (8793, 8794)
    components: tuple[str, ...] = COMPONENTS
    dags_folder: Path = REPO / "dags"
    extra_env: dict[str, str] = field(default_factory=dict)
    #: The metadata database URL and the executor (`local` or `celery`); None: SBI_AIRFLOW_DB, SBI_EXECUTOR.
    database: str | None = None
    executor: str | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _logs: list[IO[bytes]] = field(default_factory=list, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = embedded_env(self.home, host=self.host, port=self.port, log_ports=self.log_ports,
                           dags_folder=self.dags_folder, database=self.database,
                           executor=self.executor, base={**os.environ, **self.extra_env})
        return {**env, **self.extra_env}

    @property
    def celery(self) -> bool:
        return self.env["AIRFLOW__CORE__EXECUTOR"] == EXECUTORS["celery"]

    @property
    def log_dir(self) -> Path:
        return self.home / "logs" / "components"

    def start(self) -> LocalAirflow:
        """Migrate the database, create the pools, then start every component with its output in `log_dir`
        (with the CeleryExecutor, a `celery-worker` too)."""
        env = self.env
        migrate(env)
        create_pools(env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        names = [*self.components, *((WORKER,) if self.celery and WORKER not in self.components else ())]
        for name in names:
            self.start_component(name, env)
        return self

    def start_component(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start one component in its own process group, its output appended to `log_dir/<name>.log`."""
        log = open(self.log_dir / f"{name}.log", "ab")  # closed in stop()
        self._logs.append(log)
        command = COMPONENT_COMMANDS.get(name, (name,))
        self.processes[name] = subprocess.Popen(
            [str(BIN / "airflow"), *command], env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.processes[name]

    def kill_component(self, name: str) -> list[int]:
        """SIGKILL a component and every process below it, its tasks' subprocesses included (a machine or
        container that dies); returns the pids killed."""
        proc = self.processes.pop(name)
        pids = process_tree(proc.pid)
        for pid in pids:
            _kill(pid)
        proc.wait()
        return pids

    def wait_for_log(self, name: str, text: str, *, after: int = 0, timeout: float = 60.0) -> None:
        """Block until `text` appears in the component's log past byte `after` (e.g. a Celery worker's "ready")."""
        path, deadline = self.log_dir / f"{name}.log", time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text.encode() in path.read_bytes()[after:]:
                return
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {path}")
            time.sleep(0.5)
        raise TimeoutError(f"{name} did not log {text!r} within {timeout:.0f} s; see {path}")

    def listeners(self) -> list[tuple[str, int, int]]:
        """(address, port, pid) of every TCP listener of the components and their children."""
        return listening_sockets([pid for p in self.processes.values() for pid in process_tree(p.pid)])

    def wait_ready(self, timeout: float = 120.0) -> dict:
        """Block until the API answers and reports a healthy scheduler and dag-processor."""
        deadline = time.monotonic() + timeout
        health: dict = {}
        while time.monotonic() < deadline:
            dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
            if dead:
                raise RuntimeError(f"Airflow components exited early {dead}; see {self.log_dir}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as resp:
                    health = json.load(resp)
                if all((health.get(c) or {}).get("status") == "healthy" for c in self._health_keys()):
                    return health
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(1.0)
        raise TimeoutError(f"Airflow not ready at {self.url} after {timeout:.0f} s (last health: {health})")

    def _health_keys(self) -> list[str]:
        return ["metadatabase", *(c.replace("-", "_") for c in ("scheduler", "dag-processor") if c in self.components)]

    def credentials(self, user: str = "admin") -> tuple[str, str]:
        """The SimpleAuthManager login the api-server generated."""
        return user, json.loads((self.home / PASSWORDS_FILE).read_text())[user]

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM each process group, SIGKILL what is left after `grace` seconds."""
        for proc in self.processes.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # also reaps children that outlived their parent
            proc.wait()
        for pid in stragglers(self.home):  # task processes that left our process groups
            _kill(pid)
        self.processes.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LocalAirflow:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stragglers(home: Path) -> list[int]:
    """Processes still running with this AIRFLOW_HOME in their environment (Linux /proc; else none)."""
    marker = f"AIRFLOW_HOME={home}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0") and int(environ.parent.name) != os.getpid():
                found.append(int(environ.parent.name))
        except (OSError, ValueError):
            continue
    return found


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("SBI_AIRFLOW_HOME", DEFAULT_HOME)))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SBI_AIRFLOW_PORT", "8080")))
    args = parser.parse_args(argv)
    try:
        airflow = LocalAirflow(home=args.home.resolve(), port=args.port)
        airflow.env  # noqa: B018 - checks SBI_AIRFLOW_DB / SBI_EXECUTOR before anything starts
    except SetupError as exc:
        print(exc, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so `kill` also runs the cleanup below
    print(f"Starting Airflow in {airflow.home} (component logs: {airflow.log_dir}) ...", flush=True)
    try:
        with airflow:
            airflow.wait_ready()
            artifacts = airflow.env.get("SBI_ARTIFACT_ROOT", DEFAULT_ARTIFACTS)
            if (airflow.home / PASSWORDS_FILE).exists():
                user, password = airflow.credentials()
                login = f"Log in as {user} / {password}  (from {airflow.home / PASSWORDS_FILE})"
            else:  # e.g. AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True: no password is generated
                login = "No password file was generated: the auth manager's own settings decide who gets in"
            from operators.profiles import load_pools

            pools = ", ".join(f"{p.name} {p.slots}" for p in load_pools().values())
            env = airflow.env
            database = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].split("://", 1)[0]
            print(
                f"\nAirflow is up: {airflow.url}\n"
                f"{login}\n"
                f"Executor {env['AIRFLOW__CORE__EXECUTOR']}, metadata database {database} "
                "(SBI_EXECUTOR, SBI_AIRFLOW_DB)\n"
                f"DAGs from {REPO / 'dags'}; runs write under {artifacts}\n"
                f"Pools (slots): {pools}  (SBI_POOL_SLOTS=name=slots,... to change); "
                f"parallelism {env['AIRFLOW__CORE__PARALLELISM']}\n"
                "Ctrl-C stops everything.",
                flush=True,
            )
            while all(p.poll() is None for p in airflow.processes.values()):
                time.sleep(1.0)
            dead = [n for n, p in airflow.processes.items() if p.poll() is not None]
            print(f"{', '.join(dead)} exited; stopping. See {airflow.log_dir}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\nAirflow stopped.", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
