"""The batch protocol: what a batch encoder returns for a batch of lines, and which encoder to use."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, Sequence

from include.errors import PermanentError


class RowCodec(str, enum.Enum):
    """Which batch encoder validates and encodes the clean rows (see :mod:`include.encoding`)."""

    AUTO = "auto"  # the C codec when it is installed, else Arrow (with a warning)
    NATIVE = "native"  # the C codec, or fail
    ARROW = "arrow"  # Arrow's kernels


class RowCodecUnavailable(PermanentError):
    """``row_codec: native`` was asked for, and the C codec is not installed or does not fit the contract."""


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """Per line of a batch the payload and key of a clean row, or ``None`` for :func:`parse_line` to decide."""

    values: list[bytes | None]
    keys: list[str | None]
    taken: int  # lines with a payload
    payload_bytes: int  # their payloads' total size
    text_bytes: int  # the lines' total size in UTF-8, line breaks not counted
    declined: list[int]  # positions of the lines without a payload, in order


class BatchEncoder(Protocol):
    name: str

    def encode(self, lines: Sequence[str]) -> EncodedBatch: ...
