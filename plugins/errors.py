"""User-facing errors: one small hierarchy, caught once by the CLI and printed as one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "HarnessError",
    "ConfigError",
    "UnknownNameError",
    "DuplicateNameError",
    "DataError",
    "MissingDependencyError",
    "suggest",
]


class HarnessError(Exception):
    """A mistake the user can fix (bad study file, unknown name, missing data). No traceback is shown."""


class ConfigError(HarnessError):
    """A study file or option is invalid. The message names the file and the dotted key."""


class UnknownNameError(HarnessError, KeyError):
    """A registry lookup failed; the message says 'did you mean' and lists what is available."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(HarnessError):
    """Two plugins registered the same name."""


class DataError(HarnessError):
    """A dataset is missing, empty or malformed."""


class MissingDependencyError(HarnessError):
    """An optional package (mamba-ssm, psycopg, weights file...) is needed but absent."""


def suggest(name: str, choices: Iterable[str], *, what: str = "name") -> str:
    """'unknown scan 'zigzg-8'. Did you mean 'zigzag-8'? Available: ...' as one line."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    msg = f"unknown {what} {name!r}."
    if close:
        msg += " Did you mean " + " or ".join(repr(c) for c in close) + "?"
    msg += " Available: " + (", ".join(choices) if choices else "(none)")
    return msg
