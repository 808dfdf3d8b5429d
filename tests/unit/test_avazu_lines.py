"""Raw lines with exact numbers: decodable runs, undecodable lines byte for byte, gzip or plain, CRLF."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from include.avazu.contract import EXAMPLE_LINE, HEADER_LINE
from include.avazu.reader import AvazuInputError, HeaderMismatchError
from include.avazu.lines import LineSource, TextLines, UndecodableLine


def _expected(lines: list[bytes]) -> list[tuple[int, str | bytes]]:
    """What a line-by-line strict decode says: (line number, text or raw bytes)."""
    out = []
    for number, raw in enumerate(lines, start=2):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            out.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError:
            out.append((number, raw))
    return out


def _read(path: Path, block_bytes: int) -> tuple[list[tuple[int, str | bytes]], LineSource]:
    source = LineSource(str(path), block_bytes=block_bytes)
    out = []
    for item in source:
        if isinstance(item, TextLines):
            assert item.ascii == all(line.isascii() for line in item.lines)
            out.extend(enumerate(item.lines, start=item.first_line))
        else:
            assert isinstance(item, UndecodableLine) and "invalid UTF-8 at byte" in item.message
            out.append((item.line, item.raw))
    return out, source


LINES = [
    EXAMPLE_LINE.encode(),
    b"caf\xc3,broken",                       # truncated multi-byte sequence
    EXAMPLE_LINE.replace("44956a24", "caf\u00e9").encode(),  # valid non-ASCII
    b"\xff\xfe\xfd three bad bytes \xff",
    b"\xed\xa0\x80abcde",                    # an encoded surrogate: not valid UTF-8
    EXAMPLE_LINE.encode() + b"\r",           # CRLF
    b"",                                     # an empty line is a line
    b"12\x80456a\r",                         # bad and CRLF
    EXAMPLE_LINE.encode(),
]


@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize("block_bytes", [7, 64, 1 << 20])
@pytest.mark.parametrize("final_newline", [True, False])
def test_lines_match_a_line_by_line_decode(tmp_path, gzipped, block_bytes, final_newline):
    body = HEADER_LINE.encode() + b"\n" + b"\n".join(LINES * 5) + (b"\n" if final_newline else b"")
    path = tmp_path / ("x.csv.gz" if gzipped else "x.csv")
    path.write_bytes(gzip.compress(body) if gzipped else body)
    got, source = _read(path, block_bytes)
    assert got == _expected(LINES * 5)
    assert source.counts.lines == len(LINES) * 5 and source.is_gzip is gzipped
    assert source.counts.bytes_decompressed == len(body)


def test_a_block_of_garbage_is_still_read_in_linear_time(tmp_path):
    garbage = bytes(range(128, 256)) * 4000  # 512 KB without a valid character or a line break
    path = tmp_path / "g.csv"
    path.write_bytes(HEADER_LINE.encode() + b"\n" + (garbage + b"\n") * 4)
    got, _ = _read(path, 1 << 20)
    assert got == [(n, garbage) for n in range(2, 6)]


def test_header_and_empty_files_are_refused(tmp_path):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(HeaderMismatchError, match="line 1 is not the Avazu header"):
        list(LineSource(str(wrong)))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(AvazuInputError, match="is empty"):
        list(LineSource(str(empty)))
    only_header = tmp_path / "header.csv"
    only_header.write_text(HEADER_LINE + "\n")
    assert list(LineSource(str(only_header))) == []


@pytest.mark.parametrize("block_bytes", [61, 4096, 1 << 20])
def test_random_mixes_of_good_and_bad_lines_match_a_line_by_line_decode(tmp_path, block_bytes):
    # Blocks are decoded whole up to the first bad byte, then resumed after its line; any mix of
    # runs, lone bad lines, CRLF, empty lines and multi-byte characters must come out as if each
    # line had been decoded on its own.
    rng = random.Random(block_bytes)
    pieces = [b"abc", b",", b"\xff", b"\xe2\x82", b"\xe2\x82\xac", b"\xc3", b"\xa9", b"\r", EXAMPLE_LINE.encode()]
    lines = [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))) for _ in range(3000)]
    body = HEADER_LINE.encode() + b"\n" + b"\n".join(lines) + b"\n"
    path = tmp_path / "mix.csv"
    path.write_bytes(body)
    got, source = _read(path, block_bytes)
    assert got == _expected(lines)
    assert source.counts.lines == len(lines)
