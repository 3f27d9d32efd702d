"""Domain exceptions. `InputError` and subclasses mean "the user gave bad input" (exit code 2);
anything else escaping a step is a failure (exit code 1)."""

from __future__ import annotations


class SbiError(Exception):
    """Base class of every error sbi_core raises on purpose."""


class InputError(SbiError):
    """Bad input (config, file, shard, argument): the message names what is wrong."""


class ConfigError(InputError):
    """The analysis config is invalid. `issues` holds (field path, message) pairs."""

    def __init__(self, source: str, issues: list[tuple[str, str]]) -> None:
        self.source = source
        self.issues = list(issues)
        lines = [f"{path}: {msg}" if path else msg for path, msg in self.issues]
        super().__init__(f"invalid analysis config {source}:\n  " + "\n  ".join(lines))


class ShardError(InputError):
    """A shard (or group file) that combine refuses: missing, truncated, corrupt, empty, foreign."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"bad shard {uri}: {reason}")


class TransientError(SbiError):
    """A failure worth retrying (an object store that timed out or kept answering 5xx after the configured
    retries): exit code 1, printed as its one-line message without a traceback."""
