"""Samples of an Avazu file drawn in one streaming pass: head, uniform reservoir, per hour.

Samples hold good rows only (rows that pass the contract), as their original text, so a sample
file is itself a valid Avazu CSV that the reader and the ingestion accept. Bad rows are kept
apart (:class:`BadRowHead`) with their line numbers and reasons. Each sample is written in file
order. Everything is deterministic for a seed.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from include import storage
from include.avazu.contract import HEADER_LINE
from include.avazu.reader import BadRow, ColumnChunk, RowChunk
from include.errors import PermanentError
from include.paths import CONFIG_DIR, settings_file
from include.settings import Checks, read_yaml_file

DEFAULT_CONFIG = CONFIG_DIR / "avazu_sampling.yaml"
_CONFIG_KEYS = {"plan", "chunk_rows", "top_k", "progress_every_s", "default_source_uri", "default_output_uri",
                "generate_if_missing"}
_GENERATE_KEYS = {"rows", "start_hour", "hours", "seed", "fault_rate"}


class SamplingConfigError(PermanentError, ValueError):
    """The sampling settings (file or DAG params) are wrong; the message names the setting."""


_CHECK = Checks(SamplingConfigError)


@dataclass(frozen=True)
class SamplingPlan:
    """Sizes and seed of the samples; defaults live in ``include/config/avazu_sampling.yaml``."""

    head_sizes: tuple[int, ...] = (1_000, 10_000, 50_000)
    uniform_size: int = 10_000
    per_hour_size: int = 100
    seed: int = 7
    compress: bool = False
    bad_rows_kept: int = 1_000

    def validated(self) -> SamplingPlan:
        """Return self, or raise :class:`SamplingConfigError` with one sentence naming the bad setting."""
        for name in ("uniform_size", "per_hour_size", "bad_rows_kept", "seed"):
            _CHECK.whole(f"sampling setting {name}", getattr(self, name), 0)
        _CHECK.flag("sampling setting compress", self.compress)
        for size in self.head_sizes:
            _CHECK.whole("sampling setting head_sizes", size, 1)
        if len(set(self.head_sizes)) != len(self.head_sizes):
            raise SamplingConfigError(
                f"sampling setting head_sizes has repeated sizes: {list(self.head_sizes)!r}"
            )
        return self

    @classmethod
    def from_mapping(cls, values: dict[str, Any], base: SamplingPlan | None = None) -> SamplingPlan:
        """Build a plan from a mapping (config file, DAG params); unknown keys are an error."""
        changes = dict(_CHECK.mapping("sampling settings", values, cls.__dataclass_fields__))
        if "head_sizes" in changes:
            changes["head_sizes"] = tuple(changes["head_sizes"])
        return replace(base or cls(), **changes).validated()


def load_sampling_config(path: Path | None = None) -> dict[str, Any]:
    """Read and check the sampling settings file; anything wrong is one :class:`SamplingConfigError` sentence."""
    path = Path(path) if path is not None else settings_file(DEFAULT_CONFIG.name)
    config = _CHECK.mapping(str(path), read_yaml_file(Path(path), SamplingConfigError, "sampling settings file"),
                            _CONFIG_KEYS)
    _CHECK.required(str(path), config, sorted(_CONFIG_KEYS))
    SamplingPlan.from_mapping(config["plan"])
    _CHECK.whole(f"{path}: chunk_rows", config["chunk_rows"], 1)
    _CHECK.whole(f"{path}: top_k", config["top_k"], 1)
    _CHECK.seconds(f"{path}: progress_every_s", config["progress_every_s"])
    for key in ("default_source_uri", "default_output_uri"):
        _CHECK.text(f"{path}: {key}", config[key])
    generate = _CHECK.mapping(f"{path}: generate_if_missing", config["generate_if_missing"], _GENERATE_KEYS)
    _CHECK.required(f"{path}: generate_if_missing", generate, sorted(_GENERATE_KEYS))
    for key in ("rows", "start_hour", "hours", "seed"):
        _CHECK.whole(f"{path}: generate_if_missing.{key}", generate[key], 0)
    _CHECK.fraction(f"{path}: generate_if_missing.fault_rate", generate["fault_rate"])
    return config


class HeadSample:
    """The first ``size`` good rows."""

    def __init__(self, size: int):
        self.size = size
        self.line_numbers: list[int] = []
        self.lines: list[str] = []

    def offer(self, lines: Sequence[str], line_numbers: Sequence[int]) -> None:
        room = self.size - len(self.lines)
        if room > 0:
            self.lines.extend(lines[:room])
            self.line_numbers.extend(line_numbers[:room])

    def rows(self) -> list[tuple[int, str]]:
        return list(zip(self.line_numbers, self.lines))


class UniformReservoir:
    """A uniform random sample of ``size`` items from a stream of unknown length (Li's Algorithm L).

    Algorithm L draws how many items to skip instead of a random number per item, so the cost
    is O(size x log(n / size)) random draws for n items; between picks a chunk is not touched.
    """

    def __init__(self, size: int, rng: random.Random):
        self.size = size
        self.rng = rng
        self.items: list[tuple[int, str]] = []
        self.seen = 0
        self._w = 1.0
        self._next = 0  # stream index of the next item to take once the reservoir is full

    def offer(self, lines: Sequence[str], line_numbers: Sequence[int], start: int = 0, stop: int | None = None) -> None:
        """Consider the next items of the stream: ``lines[start:stop]`` (all of them by default)."""
        stop = len(lines) if stop is None else stop
        count = stop - start
        base = self.seen - start  # the stream index of lines[0]
        self.seen += count
        if self.size == 0:
            return
        taken = 0
        if len(self.items) < self.size:
            taken = min(self.size - len(self.items), count)
            self.items.extend(zip(line_numbers[start:start + taken], lines[start:start + taken]))
            if len(self.items) < self.size:
                return
            self._w = math.exp(math.log(self._unit()) / self.size)
            self._next = base + start + taken + self._skip()
        # _unit() and _skip() written out with locals: the picks are the sampler's hot loop.
        size, items, randrange, random_ = self.size, self.items, self.rng.randrange, self.rng.random
        log, log1p, exp, floor = math.log, math.log1p, math.exp, math.floor
        w, position, seen = self._w, self._next, self.seen
        while position < seen:
            offset = position - base
            items[randrange(size)] = (line_numbers[offset], lines[offset])
            u = random_()
            while u <= 0.0:
                u = random_()
            w *= exp(log(u) / size)
            if w >= 1.0:
                skip = 0
            elif w <= 0.0:
                skip = 1 << 62
            else:
                u = random_()
                while u <= 0.0:
                    u = random_()
                skip = floor(log(u) / log1p(-w))
            position += skip + 1
        self._w, self._next = w, position

    def _skip(self) -> int:
        # W is the largest key so far; it shrinks like size / seen and never reaches 0 or 1 in
        # practice, but a float can round there, and both ends must not divide by log(1) or log(0).
        if self._w >= 1.0:
            return 0
        if self._w <= 0.0:
            return 1 << 62
        return math.floor(math.log(self._unit()) / math.log1p(-self._w))

    def _unit(self) -> float:
        # Strictly inside (0, 1): both logarithms above need it.
        while True:
            u = self.rng.random()
            if u > 0.0:
                return u

    def rows(self) -> list[tuple[int, str]]:
        return sorted(self.items)


class HourlyReservoirs:
    """``size`` uniformly drawn rows for every hour, each hour with its own seeded stream."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self.by_hour: dict[int, UniformReservoir] = {}

    def offer(
        self, lines: Sequence[str], line_numbers: Sequence[int], hours: Sequence[int]
    ) -> None:
        if not len(hours):
            return
        # Rows come in hour order, so runs of one hour are long and cost one call each.
        ordered = np.asarray(hours)
        starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]])).tolist()
        for start, stop in zip(starts, starts[1:] + [len(ordered)]):
            hour = int(ordered[start])
            reservoir = self.by_hour.get(hour)
            if reservoir is None:
                reservoir = self.by_hour[hour] = UniformReservoir(
                    self.size, random.Random(f"{self.seed}:hour:{hour}")
                )
            reservoir.offer(lines, line_numbers, start, stop)

    def rows(self) -> list[tuple[int, str]]:
        return sorted(item for reservoir in self.by_hour.values() for item in reservoir.items)


class BadRowHead:
    """The first ``size`` bad rows, with line number, reason, field, message and raw text."""

    def __init__(self, size: int):
        self.size = size
        self.rows: list[BadRow] = []

    def offer(self, bad_rows: Sequence[BadRow]) -> None:
        room = self.size - len(self.rows)
        if room > 0:
            self.rows.extend(bad_rows[:room])


@dataclass
class WrittenSample:
    """A sample file that was written."""

    name: str
    kind: str
    uri: str
    rows: int


@dataclass
class SampleSet:
    """All samplers of a plan, fed together from each chunk."""

    plan: SamplingPlan
    head: HeadSample = field(init=False)
    uniform: UniformReservoir = field(init=False)
    hourly: HourlyReservoirs = field(init=False)
    bad: BadRowHead = field(init=False)

    def __post_init__(self) -> None:
        self.plan = self.plan.validated()
        # Head samples are nested: keep the largest, write each size as its prefix.
        self.head = HeadSample(max(self.plan.head_sizes, default=0))
        self.uniform = UniformReservoir(
            self.plan.uniform_size, random.Random(f"{self.plan.seed}:uniform")
        )
        self.hourly = HourlyReservoirs(self.plan.per_hour_size, self.plan.seed)
        self.bad = BadRowHead(self.plan.bad_rows_kept)

    def add(self, chunk: RowChunk | ColumnChunk) -> None:
        """Offer one chunk's good rows to every sampler and its bad rows to the bad-row head."""
        lines, numbers = chunk.lines, chunk.line_numbers
        if lines:
            self.head.offer(lines, numbers)
            self.uniform.offer(lines, numbers)
            if self.plan.per_hour_size:
                self.hourly.offer(lines, numbers, chunk.hours)
        if chunk.bad_rows:
            self.bad.offer(chunk.bad_rows)

    def write(self, folder_uri: str) -> list[WrittenSample]:
        """Write every sample as an Avazu CSV (``.csv`` or ``.csv.gz``) under ``folder_uri``."""
        suffix = ".csv.gz" if self.plan.compress else ".csv"
        head = self.head.rows()
        outputs: list[tuple[str, str, list[tuple[int, str]]]] = [
            (f"train_sample_{_size_label(size)}{suffix}", "head", head[:size])
            for size in sorted(self.plan.head_sizes)
        ]
        if self.plan.uniform_size:
            outputs.append(
                (
                    f"train_uniform_{_size_label(self.plan.uniform_size)}{suffix}",
                    "uniform",
                    self.uniform.rows(),
                )
            )
        if self.plan.per_hour_size:
            outputs.append(
                (
                    f"train_per_hour_{_size_label(self.plan.per_hour_size)}{suffix}",
                    "per_hour",
                    self.hourly.rows(),
                )
            )
        written = []
        for name, kind, rows in outputs:
            uri = storage.join_uri(folder_uri, name)
            _write_lines(uri, [HEADER_LINE, *(line for _, line in rows)], self.plan.compress)
            written.append(WrittenSample(name, kind, uri, len(rows)))
        bad_uri = storage.join_uri(folder_uri, "bad_rows_head.csv")
        _write_lines(bad_uri, _bad_rows_csv(self.bad.rows), compress=False)
        written.append(WrittenSample("bad_rows_head.csv", "bad_rows", bad_uri, len(self.bad.rows)))
        return written


def _size_label(size: int) -> str:
    """1000 -> '1k', 50000 -> '50k', 2000000 -> '2m', 1500 -> '1500' (the seed's file names)."""
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}m"
    if size % 1_000 == 0:
        return f"{size // 1_000}k"
    return str(size)


def _bad_rows_csv(rows: Sequence[BadRow]) -> Iterator[str]:
    # Raw text can hold commas and quotes, so this file is real quoted CSV, unlike the samples.
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="")
    for values in [("line_number", "reason", "field", "message", "raw")] + [
        (bad.line_number, bad.reason.value, bad.field or "", bad.message, bad.raw) for bad in rows
    ]:
        writer.writerow(values)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def _write_lines(uri: str, lines: Iterator[str] | list[str], compress: bool) -> None:
    with storage.open_write(uri) as raw:
        sink = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if compress else raw
        for line in lines:
            sink.write(line.encode("utf-8"))
            sink.write(b"\n")
        if compress:
            sink.close()
