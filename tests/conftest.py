"""Fixtures shared by every test: the repo paths, a CLI runner, and a small benchmark run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# MLflow tracking off unless a test turns it on (tests/ml/test_tracking.py does): steps that train or report
# would otherwise create an MLflow store next to every temporary run (seconds each). Subprocesses inherit it.
os.environ.setdefault("SBI_TRACKING", "off")
# One PyTorch / BLAS thread per process: `make test` runs two xdist workers on two cores, and two threads each
# made in-process training up to 5x slower (spinning threads); the local backend's default too (SBI_STEP_THREADS).
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
BENCHMARK_CONFIG = REPO / "configs" / "benchmark.yaml"
# A run small enough for unit tests: 4 shards of 1500 events, 2 groups.
SMALL = ["generation.events=6000", "generation.shards=4", "generation.shards_per_group=2", "generation.seed=11"]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict:
        lines = self.stdout.splitlines()
        assert len(lines) == 1, f"stdout must be exactly one JSON line, got {lines!r}\nstderr:\n{self.stderr}"
        return json.loads(lines[0])


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    """Run `sbi-core ARGS` in a fresh interpreter, as Airflow's local backend does."""
    proc = subprocess.run([sys.executable, "-m", "sbi_core.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """A configured, generated and combined small benchmark run (built once per session; treat as read-only)."""
    from sbi_core import steps

    run = tmp_path_factory.mktemp("small") / "run"
    summary = steps.configure(str(BENCHMARK_CONFIG), str(run), SMALL)
    steps.generate(str(run), summary["shards"])
    for g in range(summary["n_groups"]):
        steps.combine(str(run), g)
    steps.combine(str(run), None)
    return run
