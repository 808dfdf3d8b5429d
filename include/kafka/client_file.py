"""librdkafka settings from a file, one ``key=value`` a line (like Kafka's ``--command-config``).

Command-line tools of the project take their credentials this way: a password on a command line
is readable by every user of the machine (``ps``), a file can be readable by its owner only.
"""

from __future__ import annotations

from pathlib import Path

from include.errors import PermanentError


class ClientConfigError(PermanentError, ValueError):
    """The client settings file is missing or malformed; the message names the file and the line."""


def client_settings(path: Path | None) -> dict[str, str]:
    """The settings in ``path`` (none when ``path`` is None); ``#`` starts a comment line."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ClientConfigError(f"cannot read the Kafka client settings file {path}: {error.strerror}") from None
    settings = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if not equals or not key.strip():
            # The line itself stays out of the message: it may be a secret.
            raise ClientConfigError(f"{path}, line {number}: expected key=value (a librdkafka setting)")
        settings[key.strip()] = value.strip()
    return settings
