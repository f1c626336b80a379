"""One exception hierarchy, so the CLI can turn every user mistake into one line and exit 2.

Library code raises a subclass of :class:`NasMtlError` for anything a user can fix (a bad
config, a missing file, bad data); everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NasMtlError(Exception):
    """Base class of every error a user can fix."""


class ConfigError(NasMtlError):
    """A study file, search-space file or argument breaks a rule."""


class GraphError(NasMtlError):
    """A routing graph is not valid (cycle, unreachable head, width mismatch, ...)."""


class DataError(NasMtlError):
    """Input data is missing, malformed or inconsistent with the task specs."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class TrainingError(NasMtlError):
    """Training could not go on (the loss became NaN/inf)."""


class CheckpointError(NasMtlError):
    """A checkpoint file in a run directory cannot be read."""
