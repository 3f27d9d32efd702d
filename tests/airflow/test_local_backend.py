"""Local backend: the argument list reaches sbi-core unchanged, stderr streams to the log, failures fail."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators import settings
from operators.local import SbiLocalOperator, stream_process
from operators.steps import sbi_step
from tests.airflow.conftest import METACHARACTERS
from tests.airflow.fake_sbi_core import fake_summary


def test_shell_metacharacters_reach_the_step_as_one_unchanged_argument(fake_sbi_core):
    arguments = ["configure", "--config", "/c.yaml", "--set", METACHARACTERS, "--set", "generation.seed=7", 4000]
    summary = sbi_step("configure", arguments=arguments).execute(context={})
    expected = [*map(str, arguments)]
    assert fake_sbi_core.argv() == expected
    assert summary == fake_summary(expected)


@pytest.mark.parametrize(("environ", "threads"), [({}, "1"), ({"SBI_STEP_THREADS": "3"}, "3"),
                                                   ({"OMP_NUM_THREADS": "4", "SBI_STEP_THREADS": "3"}, "4")])
def test_a_local_step_uses_one_thread_unless_told(fake_sbi_core, monkeypatch, environ, threads):
    """The local pools run a step per core at once: each step's PyTorch / BLAS gets SBI_STEP_THREADS (default 1)
    threads; an OMP_NUM_THREADS of the worker wins."""
    for name in ("OMP_NUM_THREADS", "SBI_STEP_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    sbi_step("train", arguments=["train", "--run", "r", "--network", "n0"]).execute(context={})
    assert fake_sbi_core.calls()[-1]["OMP_NUM_THREADS"] == threads


def test_a_bad_thread_count_fails_the_task_naming_the_setting(fake_sbi_core, monkeypatch):
    monkeypatch.setenv("SBI_STEP_THREADS", "two")
    with pytest.raises(AirflowFailException, match="SBI_STEP_THREADS"):
        sbi_step("train", arguments=["train"]).execute(context={})


def test_the_factory_builds_the_local_operator_by_default():
    op = sbi_step("generate", arguments=["generate"], profile="gpu", retries=5)
    assert isinstance(op, SbiLocalOperator)
    assert (op.profile, op.retries, op.arguments) == ("gpu", 5, ["generate"])


def test_stderr_reaches_the_log_while_the_step_runs(fake_sbi_core, tmp_path, monkeypatch):
    """The fake step blocks until the log has shown its first line: this only finishes if stderr streams."""
    gate = tmp_path / "seen"
    monkeypatch.setenv("FAKE_SBI_STDERR", "progress 1/2|progress 2/2")
    monkeypatch.setenv("FAKE_SBI_WAIT_FOR", str(gate))

    class OpenGate(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "progress 1/2" in record.getMessage():
                gate.touch()

    log = logging.getLogger("test.stream")
    log.setLevel(logging.INFO)
    log.addHandler(handler := OpenGate())
    try:
        started = time.monotonic()
        process = subprocess.Popen([str(fake_sbi_core.path), "generate"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        returncode, stdout, tail = stream_process(process, log)
    finally:
        log.removeHandler(handler)
    assert time.monotonic() - started < 10
    assert (returncode, tail) == (0, ["progress 1/2", "progress 2/2"])
    assert stdout[-1].startswith('{"step": "generate"')


@pytest.mark.parametrize("code, exception", [(1, AirflowException), (2, AirflowFailException)])
def test_a_failing_step_fails_the_task_with_its_error_message(fake_sbi_core, monkeypatch, code, exception):
    monkeypatch.setenv("FAKE_SBI_EXIT", str(code))
    with pytest.raises(exception, match=f"exited with {code}(.|\n)*generation.events must be > 0") as info:
        sbi_step("configure", arguments=["configure"]).execute(context={})
    assert isinstance(info.value, AirflowFailException) is (code == 2)  # bad input: no retry


def test_a_summary_that_is_not_json_fails_the_task(fake_sbi_core, monkeypatch):
    monkeypatch.setenv("FAKE_SBI_STDOUT", "done!")
    with pytest.raises(AirflowException, match="not JSON"):
        sbi_step("configure", arguments=["configure"]).execute(context={})


@pytest.mark.parametrize("arguments", ["configure --run /r", [], ["configure", None], {"a": 1}])
def test_arguments_must_be_a_list_of_strings(fake_sbi_core, arguments):
    with pytest.raises(TypeError, match="step argument"):
        sbi_step("configure", arguments=arguments).execute(context={})


def test_an_unknown_profile_fails_before_running(fake_sbi_core):
    with pytest.raises(ValueError, match="profile 'tpu'"):
        sbi_step("train", arguments=["train"], profile="tpu").execute(context={})
    assert not fake_sbi_core.record.exists()


def test_sbi_core_is_found_next_to_the_interpreter():
    assert settings.sbi_core_executable() == str(Path(sys.executable).with_name("sbi-core"))
