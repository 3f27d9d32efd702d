"""The one error a reader raises for a bad artefact or bad input: it names the file, array or field."""

from __future__ import annotations

__all__ = ["FormatError"]


class FormatError(ValueError):
    """The artefact (or the events given to it) cannot be used; the message says what is wrong where."""
