"""Stream an Avazu CSV (gzip or plain, local or ``s3://``) as validated chunks, exact line numbers.

Lines come from :class:`include.avazu.lines.LineSource` (inflate in blocks, decode a block at a
time, split on ``\n``); each line is checked by :func:`include.avazu.contract.parse_line`. The
Avazu file is unquoted CSV, so splitting on commas is exact, where the ``csv`` module would let
a stray quote swallow line breaks and shift every later line number. Measured with
``bench/bench_sampling.py``, this reads and validates into typed records about as fast as
``pandas.read_csv`` parses the same file, which cannot say which line was bad or why. Memory is
bounded by the chunk size and one inflated block, whatever the file size.

Every data line ends up either in ``RowChunk.records`` or in ``RowChunk.bad_rows``:
``rows_read == good_rows + bad_rows`` at every chunk and at the end.

:meth:`AvazuReader.column_chunks` reads the same lines with the same verdicts a column at a time
(:class:`ColumnChunk`): the clean rows - nearly all of a real file - are told apart and read into
a packed array by the ingestion's C codec (:class:`include.encoding.native.NativeColumns`, outside
the interpreter), and only the lines it declines go through ``parse_line``. For passes that
aggregate (the EDA survey) rather than look at each row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from include import storage
from include.avazu.contract import Reason, parse_line
from include.avazu.lines import (
    AvazuInputError,
    CorruptInputError,
    HeaderMismatchError,
    LineSource,
    TextLines,
    TruncatedInputError,
    UndecodableLine,
)
from include.encoding.native import ROW_DTYPE, NativeColumns

# The input errors are defined with the line layer and raised through the reader.
__all__ = [
    "AvazuInputError",
    "AvazuReader",
    "BadRow",
    "ColumnChunk",
    "CorruptInputError",
    "HeaderMismatchError",
    "ReadProgress",
    "RowChunk",
    "TruncatedInputError",
    "read_all",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BadRow:
    """A line that breaks the contract, with where it was and what it said."""

    line_number: int
    reason: Reason
    field: str | None
    message: str
    raw: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (reason as its string value)."""
        return {
            "line_number": self.line_number,
            "reason": self.reason.value,
            "field": self.field,
            "message": self.message,
            "raw": self.raw,
        }


@dataclass(slots=True)
class RowChunk:
    """Up to ``chunk_rows`` consecutive data lines: good rows as parallel lists, bad rows apart."""

    first_line: int
    line_numbers: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return len(self.records) + len(self.bad_rows)

    @property
    def hours(self) -> list[int]:
        return [record["hour"] for record in self.records]


@dataclass(slots=True)
class ColumnChunk:
    """Consecutive data lines read a column at a time: the clean rows as Arrow columns, the others as
    ``parse_line`` decided them. Good rows are ``clean`` and ``records`` together; in file order
    they are ``lines`` / ``line_numbers`` / ``hours``.
    """

    first_line: int
    clean: np.ndarray  # the clean rows' figures (include.encoding.native.ROW_DTYPE)
    records: list[dict[str, Any]]  # the good rows parse_line decided (not clean, yet good)
    bad_rows: list[BadRow]  # in line order
    lines: list[str]  # every good row's line, in file order
    line_numbers: list[int]
    hours: list[int]  # every good row's hour, in file order

    @property
    def rows_read(self) -> int:
        return len(self.lines) + len(self.bad_rows)


@dataclass(slots=True)
class ReadProgress:
    """Running counts of one read; final once iteration ends."""

    good_rows: int = 0
    bad_rows: int = 0
    bytes_decompressed: int = 0
    bytes_compressed: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def rows_read(self) -> int:
        return self.good_rows + self.bad_rows

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.elapsed_s if self.elapsed_s > 0 else 0.0


class AvazuReader:
    """Iterate over an Avazu CSV as :class:`RowChunk` objects of ``chunk_rows`` data lines each.

    Gzip is recognised by its magic bytes, not the file name. Progress (rows, bytes, rate) is
    logged every ``progress_every_s`` seconds and once at the end. A truncated gzip yields every
    complete line it holds, then raises :class:`TruncatedInputError`.
    """

    def __init__(self, uri: str, chunk_rows: int = 20_000, progress_every_s: float = 10.0):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.uri = storage.resolve_local(uri)
        self.chunk_rows = chunk_rows
        self.progress_every_s = progress_every_s
        self.progress = ReadProgress()
        self._source = LineSource(self.uri)

    @property
    def is_gzip(self) -> bool | None:
        """Whether the input was gzip (None until reading starts)."""
        return self._source.is_gzip

    def __iter__(self) -> Iterator[RowChunk]:
        self.progress = ReadProgress()
        self._source = LineSource(self.uri)
        chunk = RowChunk(first_line=2)
        last_log = time.monotonic()
        try:
            for item in self._source:
                if type(item) is UndecodableLine:
                    raw = item.raw.decode("utf-8", errors="replace")
                    chunk.bad_rows.append(
                        BadRow(item.line, item.reason, None, item.message, raw)
                    )
                    self.progress.bad_rows += 1
                    if chunk.rows_read == self.chunk_rows:
                        yield chunk
                        chunk = RowChunk(first_line=item.line + 1)
                    continue
                first_line, lines = item.first_line, item.lines
                start = 0
                while start < len(lines):
                    take = min(self.chunk_rows - chunk.rows_read, len(lines) - start)
                    self._parse_into(chunk, lines, start, start + take, first_line)
                    start += take
                    if chunk.rows_read == self.chunk_rows:
                        yield chunk
                        chunk = RowChunk(first_line=first_line + start)
                if time.monotonic() - last_log >= self.progress_every_s:
                    last_log = time.monotonic()
                    self._log_progress()
        except AvazuInputError:
            # Hand over everything that was readable before the input broke, then report it.
            if chunk.rows_read:
                yield chunk
            self._log_progress(final=True)
            raise
        if chunk.rows_read:
            yield chunk
        self._log_progress(final=True)

    def column_chunks(self) -> Iterator[ColumnChunk]:
        """The file as :class:`ColumnChunk` objects of about ``chunk_rows`` lines (whole blocks of them).

        :class:`include.encoding.batch.RowCodecUnavailable` (one sentence) at once where the C codec is
        not built: iterate the reader itself instead.
        """
        return self._column_chunks(NativeColumns())

    def _column_chunks(self, native: NativeColumns) -> Iterator[ColumnChunk]:
        self.progress = ReadProgress()
        self._source = LineSource(self.uri)
        texts: list[TextLines] = []
        undecodable: list[BadRow] = []
        pending = 0
        last_log = time.monotonic()
        try:
            for item in self._source:
                if type(item) is UndecodableLine:
                    undecodable.append(BadRow(item.line, item.reason, None, item.message,
                                              item.raw.decode("utf-8", errors="replace")))
                    pending += 1
                else:
                    texts.append(item)
                    pending += len(item.lines)
                if pending >= self.chunk_rows:
                    yield self._columns(native, texts, undecodable)
                    texts, undecodable, pending = [], [], 0
                if time.monotonic() - last_log >= self.progress_every_s:
                    last_log = time.monotonic()
                    self._log_progress()
        except AvazuInputError:
            if pending:
                yield self._columns(native, texts, undecodable)
            self._log_progress(final=True)
            raise
        if pending:
            yield self._columns(native, texts, undecodable)
        self._log_progress(final=True)

    def _columns(self, native: NativeColumns, texts: list[TextLines], undecodable: list[BadRow]) -> ColumnChunk:
        lines = [line for text in texts for line in text.lines]
        numbers = np.concatenate([np.arange(t.first_line, t.first_line + len(t.lines)) for t in texts]) \
            if texts else np.empty(0, np.int64)
        clean, declined = native.columns(lines)
        good = np.ones(len(lines), bool)
        hours = np.zeros(len(lines), np.int64)
        records: list[dict[str, Any]] = []
        bad = list(undecodable)
        for index in declined:
            result = parse_line(lines[index])
            if type(result) is dict:
                records.append(result)
                hours[index] = result["hour"]
            else:
                good[index] = False
                bad.append(BadRow(int(numbers[index]), result.reason, result.field, result.message, lines[index]))
        if declined:
            taken = np.ones(len(lines), bool)
            taken[declined] = False
            hours[taken] = clean["hour"]
            kept = np.flatnonzero(good)
            good_lines = [lines[i] for i in kept.tolist()]
        else:
            hours[:] = clean["hour"]
            kept = slice(None)
            good_lines = lines
        if undecodable:
            bad.sort(key=lambda row: row.line_number)
        self.progress.good_rows += len(good_lines)
        self.progress.bad_rows += len(bad)
        return ColumnChunk(int(numbers[0]) if len(numbers) else bad[0].line_number, clean, records, bad, good_lines,
                           numbers[kept].tolist(), hours[kept].tolist())

    def _parse_into(
        self, chunk: RowChunk, lines: list[str], start: int, stop: int, first_line: int
    ) -> None:
        # The hot loop of every pass over the data: locals only, no attribute lookups per row.
        numbers, texts, records, bad = (
            chunk.line_numbers,
            chunk.lines,
            chunk.records,
            chunk.bad_rows,
        )
        good_before = len(records)
        bad_before = len(bad)
        for index in range(start, stop):
            line = lines[index]
            result = parse_line(line)
            if type(result) is dict:
                records.append(result)
                texts.append(line)
                numbers.append(first_line + index)
            else:
                bad.append(
                    BadRow(first_line + index, result.reason, result.field, result.message, line)
                )
        self.progress.good_rows += len(records) - good_before
        self.progress.bad_rows += len(bad) - bad_before

    def _log_progress(self, final: bool = False) -> None:
        p = self.progress
        p.bytes_compressed = self._source.counts.bytes_compressed
        p.bytes_decompressed = self._source.counts.bytes_decompressed
        if final:
            p.finished = time.monotonic()
        log.info(
            "%s %s: %s rows (%s good, %s bad), %.1f MB decompressed, %.1f MB read, %s rows/s",
            "read" if final else "reading",
            self.uri,
            f"{p.rows_read:,}",
            f"{p.good_rows:,}",
            f"{p.bad_rows:,}",
            p.bytes_decompressed / 1e6,
            p.bytes_compressed / 1e6,
            f"{p.rows_per_s:,.0f}",
        )


def read_all(
    uri: str, chunk_rows: int = 20_000
) -> tuple[list[dict[str, Any]], list[BadRow], ReadProgress]:
    """Read a whole (small) file into memory: good records, bad rows, counts. For tests, tools."""
    reader = AvazuReader(uri, chunk_rows=chunk_rows)
    records: list[dict[str, Any]] = []
    bad: list[BadRow] = []
    for chunk in reader:
        records.extend(chunk.records)
        bad.extend(chunk.bad_rows)
    return records, bad, reader.progress
