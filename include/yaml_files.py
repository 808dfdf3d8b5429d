"""Reading the project's YAML settings files, with the one-sentence errors the loaders promise."""

from __future__ import annotations

import difflib
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


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string: the end of an unknown-key message."""
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
