"""Staging into hour partitions (local folders): exact lines, manifests, idempotence, re-staging; and chunking."""

from __future__ import annotations

import contextlib
import gzip
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from include.avazu.contract import HEADER_LINE, parse_line
from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.avazu.reader import HeaderMismatchError, TruncatedInputError
from include.ingest.chunks import TextSegment, iter_chunks
from include.read_ahead import read_ahead
from include.ingest.result import IngestResult, ReconciliationError, reconcile
from include.avazu.lines import UndecodableLine
from include.ingest.staging import (
    MANIFEST_NAME,
    StagingError,
    LineMap,
    find_partition,
    partition_manifest_uri,
    read_manifest,
    stage_source,
)

ROW = "1000{n},0,{hour},1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("staging-src") / "train.csv.gz"
    truth = generate(GeneratorSpec(9_000, hours=3, seed=21, fault_rates={kind: 0.003 for kind in FaultKind}), path)
    return path, truth


def _source_lines(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.split(b"\n")[1:]  # index i holds line number i + 2


def _partition_lines(partition) -> list[bytes]:
    lines = gzip.decompress(Path(partition.data_uri).read_bytes()).split(b"\n")
    assert lines[0] == HEADER_LINE.encode() and lines[-1] == b""
    return lines[1:-1]


def test_every_line_lands_in_exactly_one_hour_byte_for_byte(source, tmp_path):
    path, truth = source
    result = stage_source(str(path), str(tmp_path / "staging"))
    bad_lines = truth.bad_lines()
    assert result.action == "staged"
    assert (result.rows, result.bad_rows, result.good_rows) == (truth.rows, len(bad_lines), truth.rows - len(bad_lines))
    assert result.bad_by_reason == dict(Counter(reason.value for reason in bad_lines.values()))
    assert (result.first_hour, result.last_hour, result.hours) == (14102100, 14102102, 3)

    original = _source_lines(path)
    seen: dict[int, bytes] = {}
    for hour in truth.hours:
        partition = find_partition(str(tmp_path / "staging"), hour)
        lines = _partition_lines(partition)
        line_map = partition.line_map()
        assert len(lines) == partition.rows == line_map.rows == result.rows_per_hour[str(hour)]
        bad_here = 0
        for index, line in enumerate(lines):
            number = line_map.source_line(index)
            assert number not in seen
            seen[number] = line
            assert line == original[number - 2]  # byte for byte, invalid UTF-8 included
            if number in bad_lines:
                bad_here += 1
            else:
                assert parse_line(line.decode())["hour"] == hour
        assert partition.bad_rows == bad_here and partition.good_rows == partition.rows - bad_here
        assert sum(partition.bad_by_reason.values()) == bad_here
    assert sorted(seen) == list(range(2, truth.rows + 2))


def test_staging_the_same_source_again_is_a_no_op(source, tmp_path):
    path, _ = source
    staging = tmp_path / "staging"
    first = stage_source(str(path), str(staging))
    files = {p: p.stat().st_mtime_ns for p in staging.rglob("*") if p.is_file()}
    again = stage_source(str(path), str(staging))
    assert again.action == "unchanged" and again.source_id == first.source_id and again.rows == first.rows
    assert {p: p.stat().st_mtime_ns for p in staging.rglob("*") if p.is_file()} == files


def test_a_touched_but_identical_source_is_not_restaged(source, tmp_path):
    path, _ = source
    copy = tmp_path / "train.csv.gz"
    copy.write_bytes(path.read_bytes())
    staging = tmp_path / "staging"
    stage_source(str(copy), str(staging))
    os.utime(copy, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert stage_source(str(copy), str(staging)).action == "unchanged"
    # The new mtime is remembered, so the next check does not hash the file again.
    assert read_manifest(str(staging))["source"]["mtime_ns"] == copy.stat().st_mtime_ns


def test_a_changed_source_is_restaged_and_stale_hours_removed(tmp_path):
    source = tmp_path / "train.csv.gz"
    staging = tmp_path / "staging"
    generate(GeneratorSpec(3_000, hours=3, seed=1), source)
    first = stage_source(str(source), str(staging))
    generate(GeneratorSpec(2_000, start_hour=14102101, hours=1, seed=2), source)
    second = stage_source(str(source), str(staging))
    assert second.action == "restaged" and second.source_id != first.source_id
    assert "the source changed" in second.reason
    assert (second.hours, second.rows) == (1, 2_000)
    assert find_partition(str(staging), 14102100) is None and find_partition(str(staging), 14102102) is None
    partition = find_partition(str(staging), 14102101)
    assert partition.source_id == second.source_id and partition.rows == 2_000
    # Only the new partition file and the manifests remain.
    names = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
    assert names == [MANIFEST_NAME, "hour=14102101/_partition.json", f"hour=14102101/part-{second.source_id}.csv.gz"]


def test_a_deleted_partition_file_is_restaged(source, tmp_path):
    path, _ = source
    staging = tmp_path / "staging"
    stage_source(str(path), str(staging))
    partition = find_partition(str(staging), 14102101)
    Path(partition.data_uri).unlink()
    again = stage_source(str(path), str(staging))
    assert again.action == "restaged" and "missing" in again.reason
    assert Path(find_partition(str(staging), 14102101).data_uri).is_file()


def test_broken_lines_follow_the_hour_before_them_and_out_of_order_rows_their_own(tmp_path):
    lines = [
        "garbage without commas",                  # line 2: no hour yet -> the first hour seen
        ROW.format(n=1, hour=14102100),            # 3
        ROW.format(n=2, hour=14102101),            # 4: out of order
        ROW.format(n=3, hour=14102100),            # 5
        ROW.format(n=4, hour=14109900),            # 6: BAD_HOUR -> the hour before (00)
        ROW.format(n=5, hour=14102101)[:-3],       # 7: FIELD_COUNT, but its hour is readable -> 01
        ROW.format(n=6, hour=14102101),            # 8
    ]
    source = tmp_path / "small.csv"
    # CRLF line ends and no final line break: both must read the same.
    source.write_bytes((HEADER_LINE + "\r\n" + "\r\n".join(lines)).encode())
    staging = tmp_path / "staging"
    result = stage_source(str(source), str(staging))
    assert (result.rows, result.bad_rows) == (7, 3)
    zero, one = find_partition(str(staging), 14102100), find_partition(str(staging), 14102101)
    assert zero.line_runs == [[2, 2], [5, 2]] and one.line_runs == [[4, 1], [7, 2]]
    assert _partition_lines(zero) == [lines[0].encode(), lines[1].encode(), lines[3].encode(), lines[4].encode()]
    assert zero.bad_by_reason == {"FIELD_COUNT": 1, "BAD_HOUR": 1} and one.bad_by_reason == {"FIELD_COUNT": 1}
    assert [zero.line_map().source_line(i) for i in range(4)] == [2, 3, 5, 6]


def test_a_source_that_is_not_avazu_or_is_cut_short_stages_nothing(tmp_path):
    staging = tmp_path / "staging"
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(HeaderMismatchError):
        stage_source(str(wrong), str(staging))
    cut = tmp_path / "cut.csv.gz"
    generate(GeneratorSpec(5_000, hours=2, seed=3, truncate_fraction=0.6), cut)
    with pytest.raises(TruncatedInputError):
        stage_source(str(cut), str(staging))
    assert read_manifest(str(staging)) is None
    assert not any(p.is_file() for p in staging.rglob("*"))


def test_where_a_missing_hour_is_looked_for(tmp_path):
    assert find_partition(str(tmp_path), 14102105) is None
    assert partition_manifest_uri(str(tmp_path), 14102105) == f"{tmp_path}/hour=14102105/_partition.json"


def test_line_map_translates_partition_rows_to_source_lines():
    line_map = LineMap([[2, 3], [10, 2], [20, 1]])
    assert [line_map.source_line(i) for i in range(6)] == [2, 3, 4, 10, 11, 20]
    with pytest.raises(IndexError):
        line_map.source_line(6)


def test_chunks_cover_every_row_once_and_mark_the_last(source, tmp_path):
    path, truth = source
    stage_source(str(path), str(tmp_path / "staging"))
    partition = find_partition(str(tmp_path / "staging"), 14102101)
    for size in (1, 7, 500, partition.rows, partition.rows + 1):
        chunks = list(iter_chunks(partition.data_uri, size))
        assert [c.index for c in chunks] == list(range(len(chunks)))
        assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
        assert all(c.rows == size for c in chunks[:-1]) and 0 < chunks[-1].rows <= size
        rows = [index for c in chunks for index in _row_indexes(c)]
        assert rows == list(range(partition.rows))


def test_chunks_resume_after_the_committed_rows(source, tmp_path):
    path, _ = source
    stage_source(str(path), str(tmp_path / "staging"))
    partition = find_partition(str(tmp_path / "staging"), 14102100)
    chunks = list(iter_chunks(partition.data_uri, 400, start_row=1200, start_chunk=3))
    assert chunks[0].index == 3 and chunks[0].first_row == 1200
    assert [i for c in chunks for i in _row_indexes(c)] == list(range(1200, partition.rows))
    assert list(iter_chunks(partition.data_uri, 400, start_row=partition.rows)) == []


def test_chunks_read_on_a_thread_are_the_same_and_a_read_error_reaches_the_chunk(source, tmp_path):
    path, _ = source
    stage_source(str(path), str(tmp_path / "staging"))
    partition = find_partition(str(tmp_path / "staging"), 14102101)
    with contextlib.closing(read_ahead(iter_chunks(partition.data_uri, 300))) as ahead:
        streamed = [(c.index, c.first_row, [i for s, _ in c.items() for i in _segment_rows(s)], c.last) for c in ahead]
    # Listed first: each chunk is whole once the generator has moved past it.
    whole = [(c.index, c.first_row, _row_indexes(c), c.last) for c in list(iter_chunks(partition.data_uri, 300))]
    assert streamed == whole and len(whole) > 2

    # A partition cut short: the chunks before the cut are whole, the one being read raises.
    data = Path(partition.data_uri).read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    seen = []
    with pytest.raises(TruncatedInputError):
        with contextlib.closing(read_ahead(iter_chunks(str(cut), 300))) as ahead:
            for chunk in ahead:
                seen.append([i for s, _ in chunk.items() for i in _segment_rows(s)])
    assert seen and [i for rows in seen for i in rows] == list(range(len(seen) * 300))


def _segment_rows(segment) -> list[int]:
    if isinstance(segment, UndecodableLine):
        return [segment.line - 2]
    assert isinstance(segment, TextSegment)
    return list(range(segment.first_row, segment.first_row + len(segment.lines)))


def _row_indexes(chunk) -> list[int]:
    return [i for segment in chunk.segments for i in _segment_rows(segment)]


def _result(**counts) -> IngestResult:
    result = IngestResult(hour=14102100, source_id="s", source_uri="u", partition_uri="p", topics={}, transactional_id="t",
                          action="ingest", generation=0, chunk_rows=10, resumed_from_chunk=0)
    values = dict(rows_read=10, rows_produced=8, rows_dead_lettered=2, dead_lettered_by_reason={"BAD_HOUR": 2},
                  hour_rows_read=10, hour_rows_produced=8, hour_rows_dead_lettered=2, complete=True,
                  partition_rows=10, partition_bad_rows=2)
    values.update(counts)
    for key, value in values.items():
        setattr(result, key, value)
    return result


def test_reconcile_accepts_counts_that_add_up():
    reconcile(_result())


@pytest.mark.parametrize(("counts", "message"), [
    ({"rows_produced": 7}, "this run read 10 rows but produced 7 and dead-lettered 2"),
    ({"dead_lettered_by_reason": {"BAD_HOUR": 1}}, "do not add up"),
    ({"hour_rows_produced": 9}, "the hour's checkpoint counts 10 rows read"),
    ({"partition_rows": 11}, "its partition has 11"),
    ({"partition_bad_rows": 3}, "staging found 3 bad lines"),
])
def test_reconcile_names_the_counts_that_differ(counts, message):
    with pytest.raises(ReconciliationError, match=message):
        reconcile(_result(**counts))


def test_two_runs_that_stage_together_stage_once_and_agree(source, tmp_path):
    import threading

    path, _ = source
    results = []

    def stage():
        results.append(stage_source(str(path), str(tmp_path / "staging")))

    threads = [threading.Thread(target=stage) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.action for r in results) == ["staged", "unchanged", "unchanged"]
    assert len({(r.rows, r.hours) for r in results}) == 1


def test_a_killed_stagings_leftovers_are_removed_by_the_next(source, tmp_path):
    path, _ = source
    leftover = tmp_path / "staging" / ".staging-killed"
    leftover.mkdir(parents=True)
    (leftover / "hour=14102100.csv.gz").write_bytes(b"half a file")
    stage_source(str(path), str(tmp_path / "staging"))
    assert not leftover.exists()


def test_a_source_with_a_header_and_no_rows_fails_at_once(tmp_path):
    from include.avazu.contract import HEADER_LINE

    empty = tmp_path / "header_only.csv"
    empty.write_text(HEADER_LINE + "\n")
    with pytest.raises(StagingError, match="has the Avazu header but no rows: it covers no hour"):
        stage_source(str(empty), str(tmp_path / "staging"))


def test_the_default_source_is_generated_when_missing_and_never_twice(tmp_path):
    from include.avazu.generator import GeneratorSpec

    missing = tmp_path / "train_sample.csv.gz"
    spec = GeneratorSpec.with_every_fault(2_000, seed=3, fault_rate=0.001, hours=4)
    result = stage_source(str(missing), str(tmp_path / "staging"), generate=spec)
    assert missing.is_file() and (result.action, result.rows, result.hours) == ("staged", 2_000, 4)
    before = missing.stat().st_mtime_ns
    assert stage_source(str(missing), str(tmp_path / "staging"), generate=spec).action == "unchanged"
    assert missing.stat().st_mtime_ns == before


def test_the_c_codec_path_stages_exactly_what_parsing_every_line_stages(source, tmp_path, monkeypatch):
    """Clean rows recognised a block at a time by the C codec: same partitions, counts and reasons, byte for byte."""
    from include.ingest import staging

    path, truth = source
    with_codec = stage_source(str(path), str(tmp_path / "codec"))
    monkeypatch.setattr(staging, "_clean_row_codec", lambda: None)
    parsed = stage_source(str(path), str(tmp_path / "parsed"))
    assert (with_codec.rows, with_codec.bad_rows, with_codec.bad_by_reason) == (
        parsed.rows, parsed.bad_rows, parsed.bad_by_reason)
    assert with_codec.bad_rows == len(truth.bad_lines()) > 0
    for hour in map(int, with_codec.rows_per_hour):
        a, b = find_partition(str(tmp_path / "codec"), hour), find_partition(str(tmp_path / "parsed"), hour)
        assert (a.rows, a.bad_by_reason, a.line_runs) == (b.rows, b.bad_by_reason, b.line_runs)
        assert Path(a.data_uri).read_bytes() == Path(b.data_uri).read_bytes()


def test_a_failed_deflate_is_raised_in_the_splitting_thread_and_nothing_after_it_is_written():
    from include.ingest.staging import _Compressor

    written = []

    def write(data):
        if data == b"bad":
            raise OSError("disk full")
        written.append(data)

    compressor = _Compressor(max_pending=2)
    for block in (b"a", b"bad", b"c"):
        try:
            compressor.submit(write, block)
        except OSError:
            break
    with pytest.raises(OSError, match="disk full"):
        compressor.close()
    assert written == [b"a"]
