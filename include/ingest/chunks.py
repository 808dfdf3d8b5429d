"""A staged hour's rows in chunks, read on a thread of their own while the previous chunk is produced.

A chunk is ``chunk_rows`` consecutive rows of a partition, as :class:`TextSegment` runs of decodable
lines and :class:`~include.avazu.lines.UndecodableLine` items, in file order. Row indexes count
the partition's data lines from 0 (line number minus 2), so a resumed run skips exactly the rows
its checkpoint counted. :func:`iter_chunks` hands a chunk out as soon as it has its first row and
goes on filling it; :func:`include.read_ahead.read_ahead` runs that on a reader thread, one chunk ahead
of the producer, so inflating, decoding and splitting lines overlap producing.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Iterator

from include.avazu.lines import LineSource, TextLines, UndecodableLine

# Starts the batch encoding of a segment's lines (BatchEncoder.encode on a worker thread).
Prepare = Callable[[list[str]], Future]


@dataclass(frozen=True, slots=True)
class TextSegment:
    """Consecutive decodable lines of a chunk; ``lines[i]`` is row ``first_row + i``."""

    first_row: int
    lines: list[str]
    ascii: bool


Segment = TextSegment | UndecodableLine


@dataclass
class Chunk:
    """Consecutive rows of a partition, as segments (see the module doc).

    A chunk may be handed out while a reader thread is still filling it (:func:`iter_chunks`);
    :meth:`items` waits for the segments still to come, and ``last`` and ``rows`` are final once
    it has ended.
    """

    index: int
    first_row: int
    segments: list[Segment] = field(default_factory=list)
    rows: int = 0
    last: bool = False
    # Per segment, its lines' batch encoding under way on a worker thread (None: none started).
    encoded: list[Future | None] = field(default_factory=list)
    complete: bool = True
    error: BaseException | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False, compare=False)

    def add(self, segment: Segment, prepare: Prepare | None) -> None:
        text = type(segment) is TextSegment
        encoding = prepare(segment.lines) if prepare is not None and text else None
        with self._changed:
            self.segments.append(segment)
            self.encoded.append(encoding)
            self.rows += len(segment.lines) if text else 1
            self._changed.notify_all()

    def finish(self, last: bool = False, error: BaseException | None = None) -> None:
        with self._changed:
            self.last, self.error, self.complete = last, error, True
            self._changed.notify_all()

    def items(self) -> Iterator[tuple[Segment, Future | None]]:
        """Each segment with its encoding, in order, waiting for those still being read; re-iterable."""
        position = 0
        while True:
            with self._changed:
                while position == len(self.segments) and not self.complete:
                    self._changed.wait()
                if position == len(self.segments):
                    if self.error is not None:
                        raise self.error
                    return
                item = self.segments[position], self.encoded[position]
            yield item
            position += 1


def iter_chunks(data_uri: str, chunk_rows: int, start_row: int = 0, start_chunk: int = 0,
                prepare: Prepare | None = None) -> Iterator[Chunk]:
    """A partition's rows from ``start_row`` on, in chunks of ``chunk_rows``; the last one is marked ``last``.

    Rows are counted from 0 after the header, so a resumed run skips exactly the rows its
    checkpoint counted. Each chunk is yielded as soon as it has its first row and then goes on
    being filled (:meth:`Chunk.items` waits for the rest); it is finished - ``last`` known - when
    the next row or the end of the partition is seen, so the previous chunk is always finished
    before the next one is yielded. An error while reading finishes the chunk being filled with
    that error and is raised. ``prepare`` is called on each run of lines as soon as it is read
    (see :attr:`Chunk.encoded`).
    """
    chunk: Chunk | None = None

    def start(first_row: int) -> Chunk:
        index = start_chunk if chunk is None else chunk.index + 1
        if chunk is not None:
            chunk.finish(last=False)
        return Chunk(index=index, first_row=first_row, complete=False)

    try:
        for item in LineSource(data_uri):
            if type(item) is TextLines:
                lines, row = item.lines, item.first_line - 2
                if row + len(lines) <= start_row:
                    continue
                if row < start_row:
                    lines, row = lines[start_row - row:], start_row
                while lines:
                    if chunk is None or chunk.rows == chunk_rows:
                        chunk = start(row)
                        yield chunk
                    take = min(chunk_rows - chunk.rows, len(lines))
                    chunk.add(TextSegment(row, lines[:take] if take < len(lines) else lines, item.ascii), prepare)
                    row += take
                    lines = lines[take:]
            else:
                if item.line - 2 < start_row:
                    continue
                if chunk is None or chunk.rows == chunk_rows:
                    chunk = start(item.line - 2)
                    yield chunk
                chunk.add(item, prepare)
    except BaseException as error:
        if chunk is not None and not chunk.complete:
            chunk.finish(error=error)
        raise
    if chunk is not None:
        chunk.finish(last=True)
