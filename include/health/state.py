"""What pipeline_health keeps between runs: the lag window of every watched partition (JSON, local or s3)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from include import storage
from include.health.lag import LagSample, PartitionKey

FORMAT_VERSION = 1


@dataclass
class HealthState:
    """The lag samples per partition, oldest first (see include.health.lag)."""

    windows: dict[PartitionKey, list[LagSample]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT_VERSION,
                           "windows": {k.text(): [s.as_dict() for s in v] for k, v in sorted(
                               self.windows.items(), key=lambda item: item[0].text())}}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> HealthState:
        data = json.loads(text)
        if data.get("format") != FORMAT_VERSION:
            return cls()  # an older layout: start a new window rather than misread it
        return cls({PartitionKey.parse(k): [LagSample(**s) for s in v] for k, v in data["windows"].items()})


def load_state(uri: str) -> HealthState:
    """The state at ``uri``, or an empty one when there is none yet (or it cannot be read as state)."""
    if not storage.exists(uri):
        return HealthState()
    try:
        return HealthState.from_json(storage.read_bytes(uri).decode())
    except (ValueError, KeyError, TypeError):
        # A damaged file loses the window, not the check: the next samples start a new one.
        return HealthState()


def save_state(uri: str, state: HealthState) -> None:
    storage.write_text(uri, state.to_json())
