"""The one validator of the project's settings files (include/config/*.yaml): read once, checked, one sentence.

Each settings file has its own model (``IngestConfig``, ``TopicCatalog``, ``SamplingConfig``) and its
own error type, and all of them are read by :func:`read_yaml_file` and checked with one
:class:`Checks`: a value of the wrong kind, an unknown key (with a "did you mean") or a missing
file is reported as ``<file>: <key>: <what is wrong>``, before anything touches Kafka or a file.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import yaml


def read_yaml_file(path: Path, error: type[Exception], what: str) -> Any:
    """The parsed document at ``path``; a missing file or invalid YAML raises ``error`` naming ``what`` and the path."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except yaml.YAMLError as problem:
        raise error(f"{path} is not valid YAML: {problem}") from None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string: the end of an unknown-key message."""
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Checks:
    """Checks of settings values that raise ``error`` with one sentence starting with ``where``."""

    def __init__(self, error: type[Exception]):
        self.error = error

    def mapping(self, where: str, value: Any, allowed: Collection[str]) -> dict[str, Any]:
        """A mapping (None: empty) whose keys are all in ``allowed``."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(f"{where} must be a mapping, not {type(value).__name__}")
        for key in value:
            if key not in allowed:
                raise self.error(f"{where}: unknown key {key!r}{did_you_mean(str(key), allowed)}")
        return value

    def whole(self, where: str, value: Any, minimum: int, maximum: int | None = None) -> int:
        """An int (not a bool) in ``minimum..maximum``."""
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
                maximum is not None and value > maximum):
            bound = f"{minimum}..{maximum}" if maximum is not None else f"of at least {minimum}"
            raise self.error(f"{where} must be a whole number {bound}, not {value!r}")
        return value

    def seconds(self, where: str, value: Any) -> float:
        """A number of seconds, 0 or more."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise self.error(f"{where} must be a number of seconds (0 or more), not {value!r}")
        return float(value)

    def fraction(self, where: str, value: Any) -> float:
        """A number in 0..1."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise self.error(f"{where} must be a number from 0 to 1, not {value!r}")
        return float(value)

    def text(self, where: str, value: Any) -> str:
        """A non-empty string, stripped."""
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"{where} must be a non-empty string, not {value!r}")
        return value.strip()

    def flag(self, where: str, value: Any) -> bool:
        """``true`` or ``false`` (not a string or a number)."""
        if not isinstance(value, bool):
            raise self.error(f"{where} must be true or false, not {value!r}")
        return value

    def choice(self, where: str, value: Any, choices: Collection[str]) -> str:
        """One of ``choices``, in the order they are listed in the message."""
        if str(value) not in choices:
            raise self.error(f"{where} must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    def required(self, where: str, document: dict[str, Any], keys: Iterable[str]) -> None:
        """Every one of ``keys`` is present."""
        for key in keys:
            if key not in document:
                raise self.error(f"{where}: {key} is missing")
