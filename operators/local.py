"""Local backend: the step's command in a subprocess on the Airflow worker (the default; no cluster needed).

The subprocess inherits the worker's environment, with the S3 credentials and endpoint of the Airflow AWS
connection when there is one (`operators.connections.step_environment`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators import settings
from operators.command import BAD_INPUT_EXIT, SummaryError, parse_summary, step_arguments
from operators.connections import step_environment
from operators.profiles import get_profile
from operators.settings import SettingError

_ERROR_TAIL_LINES = 20


class SbiLocalOperator(BaseOperator):
    """Run `sbi-core ARGUMENTS...`; stream its stderr into the task log; return its JSON summary as the XCom."""

    template_fields: Sequence[str] = ("arguments",)
    ui_color = "#dcefe3"

    def __init__(self, *, arguments: Sequence[Any], profile: str = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arguments = arguments
        self.profile = profile
        self._process: subprocess.Popen[str] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        get_profile(self.profile)  # sizes matter only on Kubernetes, but a typo should fail here too
        argv = [settings.sbi_core_executable(), *step_arguments(self.arguments)]
        try:
            env = step_environment(os.environ)  # S3 credentials from the Airflow connection, never logged
            env.setdefault("OMP_NUM_THREADS", str(settings.step_threads()))  # one step per core at once
        except SettingError as exc:
            raise AirflowFailException(str(exc)) from exc
        self.log.info("Running %s (profile %s)", argv, self.profile)
        self._process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
        returncode, stdout, error_tail = stream_process(self._process, self.log)
        if returncode != 0:
            message = f"sbi-core {argv[1]} exited with {returncode}:\n" + "\n".join(error_tail)
            raise (AirflowFailException if returncode == BAD_INPUT_EXIT else AirflowException)(message)
        try:
            return parse_summary(stdout)
        except SummaryError as exc:
            raise AirflowException(f"sbi-core {argv[1]}: {exc}") from exc

    def on_kill(self) -> None:
        """Stop the step and anything it started (it runs in its own process group)."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)


def stream_process(process: subprocess.Popen[str], log: logging.Logger | Any) -> tuple[int, list[str], list[str]]:
    """Log stderr line by line while collecting stdout; return (exit code, stdout lines, last stderr lines)."""
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.extend(process.stdout or ()), daemon=True)
    reader.start()
    tail: deque[str] = deque(maxlen=_ERROR_TAIL_LINES)
    for line in process.stderr or ():
        line = line.rstrip("\n")
        tail.append(line)
        log.info("%s", line)
    returncode = process.wait()
    reader.join()
    return returncode, stdout, list(tail)
