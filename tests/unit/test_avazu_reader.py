"""The chunked reader: gzip and plain, exact line numbers for every fault, truncation, odd files."""

from __future__ import annotations

import gzip
import logging

import pytest

from include.avazu.contract import EXAMPLE_LINE, HEADER_LINE, Reason
from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.avazu.lines import LineSource, TextLines, UndecodableLine
from include.avazu.reader import (
    AvazuInputError,
    AvazuReader,
    CorruptInputError,
    HeaderMismatchError,
    TruncatedInputError,
    read_all,
)

ROWS = 30_000


@pytest.fixture(scope="module", params=["csv.gz", "csv"])
def faulty(request, tmp_path_factory):
    """The same faulty rows as gzip and as plain CSV."""
    path = tmp_path_factory.mktemp("reader") / f"faulty.{request.param}"
    rates = {kind: 0.004 for kind in FaultKind}
    return path, generate(GeneratorSpec(ROWS, seed=21, fault_rates=rates), path)


def _file(tmp_path, text: bytes, name: str = "f.csv") -> str:
    path = tmp_path / name
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    return str(path)


def test_every_fault_is_reported_on_its_exact_line_with_its_reason(faulty):
    path, truth = faulty
    records, bad, progress = read_all(str(path), chunk_rows=7_000)
    assert {b.line_number: b.reason for b in bad} == truth.bad_lines()
    for b in bad:
        if b.reason is not Reason.FIELD_COUNT and b.reason is not Reason.BAD_ENCODING:
            assert b.field == truth.fault_fields[b.line_number]
    assert progress.rows_read == len(records) + len(bad) == ROWS
    assert (progress.good_rows, progress.bad_rows) == (len(records), len(bad))


def test_good_rows_carry_their_line_numbers_and_original_text(faulty):
    path, truth = faulty
    raw_lines = (
        gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ).split(b"\n")
    expected_good = set(range(2, ROWS + 2)) - set(truth.bad_lines())
    seen = []
    for chunk in AvazuReader(str(path), chunk_rows=4_096):
        assert len(chunk.line_numbers) == len(chunk.lines) == len(chunk.records)
        for number, text in zip(chunk.line_numbers, chunk.lines):
            assert raw_lines[number - 1].decode() == text
        seen.extend(chunk.line_numbers)
    assert seen == sorted(expected_good)


def test_chunks_have_the_requested_size_and_are_counted(faulty):
    path, _ = faulty
    reader = AvazuReader(str(path), chunk_rows=5_000)
    chunks = list(reader)
    assert [c.rows_read for c in chunks] == [5_000] * 6
    assert [c.first_line for c in chunks] == [2 + 5_000 * i for i in range(6)]
    assert reader.progress.rows_read == ROWS
    assert reader.is_gzip == path.name.endswith(".gz")


def test_bad_utf8_keeps_the_raw_text_with_replacement_characters(faulty):
    path, truth = faulty
    _, bad, _ = read_all(str(path))
    encoding = [b for b in bad if b.reason is Reason.BAD_ENCODING]
    assert [b.line_number for b in encoding] == _undecodable_lines(truth)
    assert all("\ufffd" in b.raw and b.raw.count(",") >= 20 for b in encoding)


def test_truncated_gzip_yields_what_it_holds_then_says_how_far_it_got(tmp_path):
    path = tmp_path / "cut.csv.gz"
    truth = generate(GeneratorSpec(50_000, seed=8, truncate_fraction=0.5), path)
    reader = AvazuReader(str(path), chunk_rows=10_000)
    rows = 0
    with pytest.raises(TruncatedInputError) as error:
        for chunk in reader:
            rows += chunk.rows_read
    assert error.value.lines_read == truth.complete_lines_after_truncation
    assert rows == truth.complete_lines_after_truncation - 1 == reader.progress.rows_read
    assert error.value.bytes_compressed == truth.truncated_at_byte
    assert f"after line {truth.complete_lines_after_truncation:,}" in str(error.value)
    assert "truncated" in str(error.value)


def test_truncated_inside_the_gzip_header(tmp_path):
    path = tmp_path / "tiny.csv.gz"
    path.write_bytes(gzip.compress(f"{HEADER_LINE}\n{EXAMPLE_LINE}\n".encode())[:6])
    with pytest.raises(TruncatedInputError, match="after line 0"):
        list(AvazuReader(str(path)))


def test_corrupt_gzip_is_its_own_error(tmp_path):
    data = bytearray(gzip.compress(f"{HEADER_LINE}\n{EXAMPLE_LINE}\n".encode() * 1))
    data[-6] ^= 0xFF  # inside the CRC/length trailer
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptInputError, match="not valid gzip"):
        list(AvazuReader(str(path)))


def test_concatenated_gzip_members_are_one_file(tmp_path):
    path = tmp_path / "multi.csv.gz"
    path.write_bytes(
        gzip.compress(f"{HEADER_LINE}\n{EXAMPLE_LINE}\n".encode())
        + gzip.compress(f"{EXAMPLE_LINE}\n".encode())
    )
    records, bad, _ = read_all(str(path))
    assert (len(records), bad) == (2, [])


@pytest.mark.parametrize("name", ["f.csv", "f.csv.gz"])
def test_odd_but_readable_files(tmp_path, name):
    text = (
        f"\ufeff{HEADER_LINE}\r\n{EXAMPLE_LINE}\r\n\r\n{EXAMPLE_LINE}".encode()
    )  # BOM, CRLF, blank line, no final newline
    records, bad, progress = read_all(_file(tmp_path, text, name))
    assert len(records) == 2
    assert [(b.line_number, b.reason) for b in bad] == [(3, Reason.FIELD_COUNT)]
    assert progress.rows_read == 3


def test_header_only_file_has_no_rows(tmp_path):
    records, bad, progress = read_all(_file(tmp_path, f"{HEADER_LINE}\n".encode()))
    assert (records, bad, progress.rows_read) == ([], [], 0)


def test_wrong_header_stops_the_read(tmp_path):
    with pytest.raises(HeaderMismatchError, match="line 1 is not the Avazu header"):
        list(AvazuReader(_file(tmp_path, b"id,click,hour\n1,0,14102100\n")))


def test_empty_file_stops_the_read(tmp_path):
    with pytest.raises(AvazuInputError, match="empty"):
        list(AvazuReader(_file(tmp_path, b"")))


def test_progress_is_logged(faulty, caplog):
    path, _ = faulty
    with caplog.at_level(logging.INFO, logger="include.avazu.reader"):
        list(AvazuReader(str(path), progress_every_s=0.0))
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("reading ") for m in messages)
    assert messages[-1].startswith(f"read {path}: 30,000 rows")
    assert "rows/s" in messages[-1]


def test_chunk_rows_must_be_positive():
    with pytest.raises(ValueError, match="chunk_rows"):
        AvazuReader("x.csv", chunk_rows=0)


def test_a_line_too_long_to_read_is_one_bad_row_and_is_never_held_whole(tmp_path):
    import hashlib

    from include.avazu.lines import KEPT_LINE_BYTES, MAX_LINE_BYTES

    blob = b"x" * (10 * 1024 * 1024)
    path = tmp_path / "blob.csv"
    path.write_bytes(HEADER_LINE.encode() + b"\n" + EXAMPLE_LINE.encode() + b"\n" + blob + b"\n" + EXAMPLE_LINE.encode())
    items = list(LineSource(str(path), block_bytes=256 * 1024))
    [long] = [item for item in items if type(item) is UndecodableLine]
    assert (long.line, long.reason, long.length) == (3, Reason.LINE_TOO_LONG, len(blob))
    assert long.raw == blob[:KEPT_LINE_BYTES] and long.sha256 == hashlib.sha256(blob).hexdigest()
    assert f"longer than {MAX_LINE_BYTES:,}" in long.message
    records, bad, _ = read_all(str(path))
    assert len(records) == 2 and [(b.line_number, b.reason) for b in bad] == [(3, Reason.LINE_TOO_LONG)]


def test_a_file_without_line_breaks_is_refused_before_it_fills_memory(tmp_path):
    path = tmp_path / "blob.csv"
    path.write_bytes(b"x" * (3 * 1024 * 1024))
    with pytest.raises(AvazuInputError, match="line 1 is longer than"):
        list(AvazuReader(str(path)))


def test_line_source_hands_out_every_line_and_undecodable_ones_byte_for_byte(faulty):
    path, truth = faulty
    raw_lines = (
        gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ).split(b"\n")
    source = LineSource(str(path), block_bytes=64 * 1024)
    numbers, undecodable = [], []
    for item in source:
        if type(item) is TextLines:
            numbers.extend(range(item.first_line, item.first_line + len(item.lines)))
            assert item.ascii == all(line.isascii() for line in item.lines)
        else:
            assert type(item) is UndecodableLine and item.raw == raw_lines[item.line - 1]
            numbers.append(item.line)
            undecodable.append(item.line)
    assert numbers == list(range(2, ROWS + 2)) and source.counts.lines == ROWS
    assert undecodable == _undecodable_lines(truth)


def _undecodable_lines(truth) -> list[int]:
    """The lines that are not UTF-8: broken bytes (bad_utf8) and Windows-1252 text (cp1252_text)."""
    return sorted(line for line, reason in truth.bad_lines().items() if reason is Reason.BAD_ENCODING)
