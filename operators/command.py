"""The step command line, shared by both backends so a step gets the identical argument list everywhere.

`sbi-core` prints ONE JSON summary line on stdout (the XCom) and logs on stderr; arguments travel as
separate argv items, never through a shell string.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

BAD_INPUT_EXIT = 2  # sbi-core's exit code for bad input: retrying cannot help, on either backend

# In a pod: run `sbi-core "$@"` (the step's arguments, as positional parameters of `sh -c`, so no
# shell ever parses them), show its stdout in the log, and copy the summary line to the XCom file.
POD_WRAPPER = """out="$(mktemp)" || exit 1
sbi-core "$@" >"$out"
rc=$?
cat "$out"
if [ "$rc" -eq 0 ]; then
  grep -v '^[[:space:]]*$' "$out" | tail -n 1 >/airflow/xcom/return.json || rc=1
fi
exit "$rc"
"""


class SummaryError(ValueError):
    """The step exited 0 but its last stdout line is not a JSON object."""


def step_arguments(arguments: Sequence[Any]) -> list[str]:
    """The argv items after `sbi-core`: strings as they are, numbers as text, anything else refused."""
    if isinstance(arguments, str | bytes) or not isinstance(arguments, Sequence):
        raise TypeError(f"step arguments must be a list of strings, got {type(arguments).__name__}: {arguments!r}")
    out = []
    for i, item in enumerate(arguments):
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise TypeError(f"step argument {i} must be a string or number, got {type(item).__name__}: {item!r}")
        out.append(item if isinstance(item, str) else str(item))
    if not out:
        raise TypeError("step arguments are empty: the first one names the sbi-core step")
    return out


def pod_command() -> list[str]:
    """Container command; Kubernetes appends the step arguments, which become `"$@"` (`$0` is `sbi-core`)."""
    return ["sh", "-c", POD_WRAPPER, "sbi-core"]


def parse_summary(stdout_lines: Iterable[str]) -> dict[str, Any]:
    """The last non-empty stdout line, parsed as a JSON object."""
    lines = [line.strip() for line in stdout_lines if line.strip()]
    if not lines:
        raise SummaryError("the step printed no summary line on stdout")
    try:
        summary = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise SummaryError(f"the step's last stdout line is not JSON ({exc}): {lines[-1][:200]!r}") from exc
    if not isinstance(summary, dict):
        raise SummaryError(f"the step's summary must be a JSON object, got {type(summary).__name__}")
    return summary
