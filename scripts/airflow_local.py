"""Run this project's Airflow 3 on 127.0.0.1 with embedded defaults (`make airflow`); Ctrl-C stops all of it.

Embedded defaults: AIRFLOW_HOME `<repo>/.airflow`, SQLite, LocalExecutor, the repo's `dags/`, no
examples, the local step backend. `LocalAirflow` is also what the integration test and the DAG
benchmark start: api-server, scheduler, dag-processor (and triggerer), each in its own process group.
"""

from __future__ import annotations

import argparse
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
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


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
) -> dict[str, str]:
    """Environment for every Airflow process of the embedded setup (`base` defaults to os.environ)."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": host,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://{host}:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{host}:{port}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_ports[0]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(log_ports[1]),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    env.setdefault("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False")
    env.setdefault("SBI_BACKEND", "local")
    return env


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade the metadata database (idempotent, a few seconds)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)


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
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _logs: list[IO[bytes]] = field(default_factory=list, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = embedded_env(self.home, host=self.host, port=self.port, log_ports=self.log_ports,
                           dags_folder=self.dags_folder)
        return {**env, **self.extra_env}

    @property
    def log_dir(self) -> Path:
        return self.home / "logs" / "components"

    def start(self) -> LocalAirflow:
        """Migrate the database, then start every component with its output in `log_dir`."""
        env = self.env
        migrate(env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in self.components:
            log = open(self.log_dir / f"{name}.log", "ab")  # closed in stop()
            self._logs.append(log)
            self.processes[name] = subprocess.Popen(
                [str(BIN / "airflow"), name], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

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
    airflow = LocalAirflow(home=args.home.resolve(), port=args.port)
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
            print(
                f"\nAirflow is up: {airflow.url}\n"
                f"{login}\n"
                f"DAGs from {REPO / 'dags'}; runs write under {artifacts}\n"
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
