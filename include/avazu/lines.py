"""Read an Avazu CSV (gzip or plain, local or ``s3://``) as raw lines with exact line numbers.

The layer under :class:`include.avazu.reader.AvazuReader` (validated records) and under anything
that needs the lines themselves (staging copies them byte for byte; a dead-lettered row carries
its input exactly as read, even when it is not valid UTF-8). Compressed bytes are inflated with
``zlib`` in blocks, each block of complete lines is decoded as UTF-8 in one call and split on
``\\n``, and the lines are handed out as

* :class:`TextLines` - consecutive decodable lines with the number of the first one, and
* :class:`UndecodableLine` - one line that is not UTF-8, with its raw bytes.

The Avazu file is unquoted CSV, so one physical line is one row: line numbers are exact (the
header is line 1), and nothing is skipped silently - which ``pandas.read_csv`` (blank lines,
``on_bad_lines``) and the ``csv`` module (a stray quote swallows line breaks) cannot promise. A
CR before the line break is dropped (CRLF files). Memory is one inflated block, whatever the
file size.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from include import storage
from include.avazu.contract import HEADER_LINE, Reason
from include.errors import PermanentError

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
BLOCK_BYTES = 1024 * 1024
# One inflate call never returns more than this, so a pathological input cannot blow up a block.
_MAX_INFLATED_BYTES = 16 * 1024 * 1024
# Avazu lines are about 160 bytes; anything near this is not a CSV row. A longer line is read
# past (never held whole) and handed out as a bad line keeping its first KEPT_LINE_BYTES.
MAX_LINE_BYTES = 1024 * 1024
KEPT_LINE_BYTES = 64 * 1024


class AvazuInputError(PermanentError):
    """The input as a whole cannot be read as an Avazu file (as opposed to one bad row)."""


class HeaderMismatchError(AvazuInputError):
    """Line 1 is not the Avazu header."""


class TruncatedInputError(AvazuInputError):
    """The gzip stream ends before its end-of-stream marker: the file was cut short."""

    def __init__(
        self,
        uri: str,
        lines_read: int,
        bytes_decompressed: int,
        bytes_compressed: int,
        partial_line_bytes: int,
    ):
        self.uri = uri
        self.lines_read = lines_read
        self.bytes_decompressed = bytes_decompressed
        self.bytes_compressed = bytes_compressed
        self.partial_line_bytes = partial_line_bytes
        super().__init__(
            f"{uri} is truncated: the gzip stream ended without its end marker "
            f"after line {lines_read:,} ({bytes_decompressed:,} bytes decompressed "
            f"from {bytes_compressed:,} compressed bytes; "
            f"a partial line of {partial_line_bytes:,} bytes was dropped)"
        )


class CorruptInputError(AvazuInputError):
    """The gzip stream is damaged (bad header, bad checksum, invalid deflate data)."""


@dataclass(slots=True)
class TextLines:
    """Consecutive decodable lines; ``lines[i]`` is line number ``first_line + i``.

    ``ascii`` is true when every line is ASCII (the Avazu data is, apart from broken rows): then
    a line's length in characters is its length in bytes.
    """

    first_line: int
    lines: list[str]
    ascii: bool = False


@dataclass(frozen=True, slots=True)
class UndecodableLine:
    """A line that is not valid UTF-8, exactly as read (without its line break), or one too long to read.

    A line longer than :data:`MAX_LINE_BYTES` keeps only its first :data:`KEPT_LINE_BYTES` in
    ``raw``, with reason LINE_TOO_LONG, its whole ``length`` and the ``sha256`` of all its bytes.
    """

    line: int
    raw: bytes
    message: str
    reason: Reason = Reason.BAD_ENCODING
    length: int | None = None
    sha256: str | None = None


@dataclass(slots=True)
class LineCounts:
    """Running counts of one pass; final once iteration ends."""

    lines: int = 0  # data lines, header excluded
    bytes_compressed: int = 0
    bytes_decompressed: int = 0


class LineSource:
    """Iterate over the data lines of an Avazu CSV as :class:`TextLines` / :class:`UndecodableLine`.

    Gzip is recognised by its magic bytes, not by the name; concatenated gzip members are one
    stream. A truncated gzip yields every complete line it holds, then raises
    :class:`TruncatedInputError`; damaged gzip raises :class:`CorruptInputError`.
    """

    def __init__(self, uri: str, block_bytes: int = BLOCK_BYTES):
        self.uri = storage.resolve_local(uri)
        self.block_bytes = block_bytes
        self.counts = LineCounts()
        self.is_gzip: bool | None = None

    def __iter__(self) -> Iterator[TextLines | UndecodableLine]:
        self.counts = LineCounts()
        next_line = 1
        carry = b""
        header_seen = False
        overlong: _OverlongLine | None = None
        blocks = self._inflated_blocks()
        while True:
            try:
                block = next(blocks)
            except StopIteration:
                break
            except TruncatedInputError:
                raise TruncatedInputError(
                    self.uri,
                    next_line - 1,
                    self.counts.bytes_decompressed,
                    self.counts.bytes_compressed,
                    len(carry),
                ) from None
            data = carry + block if carry else block
            if overlong is not None:
                end = data.find(b"\n")
                if end < 0:
                    overlong.add(data)
                    self.counts.bytes_decompressed += len(data)
                    carry = b""
                    continue
                overlong.add(data[:end])
                self.counts.bytes_decompressed += end + 1
                yield overlong.line_item()
                next_line += 1
                self.counts.lines += 1
                overlong, data = None, data[end + 1:]
            cut = data.rfind(b"\n")
            if cut < 0:
                if len(data) > MAX_LINE_BYTES:
                    if not header_seen:
                        raise AvazuInputError(
                            f"{self.uri} line 1 is longer than {MAX_LINE_BYTES:,} bytes: not an Avazu CSV"
                        )
                    # Read past it, never holding it whole: a bad row, not a broken file.
                    overlong = _OverlongLine(next_line)
                    overlong.add(data)
                    self.counts.bytes_decompressed += len(data)
                    carry = b""
                    continue
                carry = data
                continue
            carry = data[cut + 1 :]
            complete = data[:cut]
            self.counts.bytes_decompressed += cut + 1
            if not header_seen:
                header, newline, complete = complete.partition(b"\n")
                self._check_header(header)
                header_seen = True
                next_line = 2
                if not newline:
                    continue  # the block held only the header line
            count = complete.count(b"\n") + 1
            yield from _decode(complete, next_line)
            next_line += count
            self.counts.lines += count
        if overlong is not None:
            yield overlong.line_item()
            self.counts.lines += 1
        elif carry:
            # A last line without a trailing line break is still a line.
            self.counts.bytes_decompressed += len(carry)
            if not header_seen:
                self._check_header(carry)
                return
            yield from _decode(carry, next_line)
            self.counts.lines += 1
        elif not header_seen:
            raise AvazuInputError(f"{self.uri} is empty: there is no header line")

    def _check_header(self, header: bytes) -> None:
        text = header.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r")
        if text != HEADER_LINE:
            found = text if len(text) <= 300 else text[:300] + "..."
            raise HeaderMismatchError(
                f"{self.uri} line 1 is not the Avazu header: "
                f"expected {HEADER_LINE!r}, found {found!r}"
            )

    def _inflated_blocks(self) -> Iterator[bytes]:
        with storage.open_read(self.uri) as source:
            self.is_gzip = source.peek(2)[:2] == _GZIP_MAGIC
            if not self.is_gzip:
                while block := source.read(self.block_bytes):
                    self.counts.bytes_compressed += len(block)
                    yield block
                return
            yield from self._gunzip(source)

    def _gunzip(self, source: BinaryIO) -> Iterator[bytes]:
        inflater = zlib.decompressobj(_GZIP_WBITS)
        member_has_input = False
        while block := source.read(self.block_bytes):
            self.counts.bytes_compressed += len(block)
            pending = block
            while pending:
                member_has_input = True
                try:
                    data = inflater.decompress(pending, _MAX_INFLATED_BYTES)
                except zlib.error as err:
                    raise CorruptInputError(
                        f"{self.uri} is not valid gzip near compressed byte "
                        f"{self.counts.bytes_compressed:,}: {err}"
                    ) from err
                if data:
                    yield data
                if inflater.eof:
                    # Concatenated members are one stream; zero padding after the last one is
                    # tolerated.
                    pending = inflater.unused_data
                    inflater = zlib.decompressobj(_GZIP_WBITS)
                    member_has_input = False
                    if not pending.strip(b"\x00"):
                        pending = b""
                else:
                    pending = inflater.unconsumed_tail
        if member_has_input:
            tail = inflater.flush()
            if tail:
                yield tail
            # The caller knows the line position and fills it in.
            raise TruncatedInputError(self.uri, 0, 0, self.counts.bytes_compressed, 0)


class _OverlongLine:
    """A line longer than MAX_LINE_BYTES, read block by block: its start, length and checksum."""

    def __init__(self, line: int):
        self.line = line
        self.kept = bytearray()
        self.length = 0
        self.digest = hashlib.sha256()

    def add(self, data: bytes) -> None:
        if len(self.kept) < KEPT_LINE_BYTES:
            self.kept += data[:KEPT_LINE_BYTES - len(self.kept)]
        self.length += len(data)
        self.digest.update(data)

    def line_item(self) -> UndecodableLine:
        return UndecodableLine(
            self.line, bytes(self.kept),
            f"the line is {self.length:,} bytes, longer than {MAX_LINE_BYTES:,}: kept its first "
            f"{len(self.kept):,} bytes", Reason.LINE_TOO_LONG, self.length, self.digest.hexdigest())


def _decode(complete: bytes, first_line: int) -> Iterator[TextLines | UndecodableLine]:
    """Decode a block of whole lines: runs of good lines stay together, each undecodable line alone.

    A decode error points at the first bad byte, so the lines before it are decoded in one go,
    the line holding it becomes an :class:`UndecodableLine`, and decoding resumes after it. Each
    byte is decoded at most twice, however many bad lines the block holds.
    """
    view, position = memoryview(complete), 0
    while True:
        try:
            text = str(view[position:], "utf-8")
        except UnicodeDecodeError as err:
            bad = position + err.start
            start = complete.rfind(b"\n", position, bad) + 1 or position
            end = complete.find(b"\n", bad)
            if start > position:
                yield _text_lines(str(view[position:start - 1], "utf-8"), first_line)
                first_line += complete.count(b"\n", position, start)
            raw = complete[start:] if end < 0 else complete[start:end]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            yield UndecodableLine(first_line, raw, f"invalid UTF-8 at byte {bad - start} of the line")
            if end < 0:
                return
            position, first_line = end + 1, first_line + 1
            continue
        yield _text_lines(text, first_line)
        return


def _text_lines(text: str, first_line: int) -> TextLines:
    lines = text.split("\n")
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    # str.isascii() is a flag lookup in CPython, not a scan.
    return TextLines(first_line, lines, text.isascii())
