"""The batch encoders never change a verdict: what they encode, the row-by-row path encodes the same.

Every test runs on both: the C codec (``native``, which ``make install`` builds, so a missing one
fails here rather than being skipped) and the Arrow fallback.
"""

from __future__ import annotations

import random
import sys
import types

import pytest

from include.avazu.contract import COLUMN_NAMES, EXAMPLE_LINE, parse_line
from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.avazu.lines import LineSource, TextLines
from include.encoding import native
from include.encoding import batch_encoder
from include.encoding.batch import RowCodec, RowCodecUnavailable
from include.encoding.rows import AdEventEncoder, partition_key
from tests.mutations import mutated_lines

ROWS = AdEventEncoder(schema_id=4242)


@pytest.fixture(params=[RowCodec.NATIVE, RowCodec.ARROW], ids=lambda codec: codec.value)
def codec(request) -> RowCodec:
    return request.param


def _with(column: str, value: str, line: str = EXAMPLE_LINE) -> str:
    fields = line.split(",")
    fields[COLUMN_NAMES.index(column)] = value
    return ",".join(fields)


def _check_batch(codec: RowCodec, lines: list[str]) -> tuple[int, int]:
    """Encode ``lines`` as one batch; every payload and key must be the row path's. Returns (taken, declined)."""
    batch = batch_encoder(ROWS, codec).encode(lines)
    assert len(batch.values) == len(batch.keys) == len(lines)
    taken = 0
    for line, value, key in zip(lines, batch.values, batch.keys):
        if value is None:
            continue
        record = parse_line(line)
        assert isinstance(record, dict), f"the batch encoded a row the contract rejects: {line!r} ({record})"
        assert value == ROWS.encode(record), line
        assert key == partition_key(record), line
        taken += 1
    assert batch.taken == taken
    assert batch.declined == [i for i, value in enumerate(batch.values) if value is None]
    assert batch.text_bytes == sum(len(line.encode("utf-8", "surrogatepass")) for line in lines)
    assert batch.payload_bytes == sum(len(v) for v in batch.values if v is not None)
    return taken, len(lines) - taken


def test_a_generated_file_with_every_fault_encodes_as_row_by_row(codec, tmp_path):
    path = tmp_path / "avazu.csv.gz"
    faults = {kind: 0.01 for kind in FaultKind}
    generate(GeneratorSpec(30_000, hours=2, seed=11, fault_rates=faults), path)
    lines = [line for item in LineSource(str(path)) if isinstance(item, TextLines) for line in item.lines]
    taken, declined = _check_batch(codec, lines)
    rejected = sum(1 for line in lines if not isinstance(parse_line(line), dict))
    # The broken rows are left to the row path, and of the valid ones only the few the clean-row
    # pattern does not cover (ids at or above 1.84e19: about 0.25% of uniform 64-bit ids).
    assert rejected > 0 and rejected <= declined < rejected + 0.005 * len(lines)


def test_rows_the_clean_pattern_does_not_take_are_left_to_the_row_path(codec):
    valid_but_not_clean = [
        _with("device_model", ""),  # an empty nullable field
        _with("C20", "2147483647"),  # ten digits: valid, beyond the pattern's nine
        _with("banner_pos", "255"),  # three digits: valid, beyond the pattern's two
        _with("id", "18446744073709551615"),  # 2^64-1: valid, beyond the pattern's 1.84e19
        _with("id", "0"),  # valid, but the pattern's ids have no leading zero
    ]
    invalid = [
        _with("hour", "14103100"),  # a real date outside the data set's span
        _with("site_id", "1FBE01FE"),
        _with("hour", "04102100"),
        _with("click", "2"),
        _with("C1", "-2"),
        _with("C1", "-10"),
        _with("device_ip", "ddd2926"),
        EXAMPLE_LINE + ",extra",
        EXAMPLE_LINE.rsplit(",", 1)[0],
        EXAMPLE_LINE + ",",
        "," + EXAMPLE_LINE,
        "",
    ]
    lines = valid_but_not_clean + invalid
    batch = batch_encoder(ROWS, codec).encode(lines)
    assert batch.values == [None] * len(lines) and batch.taken == 0
    assert batch.declined == list(range(len(lines)))
    assert all(isinstance(parse_line(line), dict) for line in valid_but_not_clean)


def test_odd_characters_in_the_device_model_are_encoded_by_bytes(codec):
    lines = [_with("device_model", text) for text in ("a\rb", "tab\there", '"q"', "\x00", "m" * 63, "m" * 64, "m" * 1023)]
    taken, declined = _check_batch(codec, lines)
    assert (taken, declined) == (len(lines), 0)


def test_non_ascii_and_long_device_models_agree_with_the_row_path(codec):
    # The C codec leaves non-ASCII lines to the row path, Arrow leaves device models of 1,024
    # bytes or more to it; what either takes must still be the row path's bytes.
    lines = [_with("device_model", text) for text in ("caf\u00e9", "\u4e2d\u6587", "\U0001f600", "m" * 1024, "m" * 20_000)]
    taken, declined = _check_batch(codec, lines)
    assert taken + declined == len(lines)
    assert taken == {RowCodec.NATIVE: 2, RowCodec.ARROW: 3}[codec]


def test_mutated_rows_never_get_a_different_verdict_or_payload(codec):
    rng = random.Random(20141021)
    # Characters around the edges of the pattern's classes ("/" and ":" around the digits, "`" and
    # "g" around a-f) catch an off-by-one in either path.
    pool = list("0123456789abcdefABCDEF-+_ .x,\r\u0661\u00e9/:`g") + ["", "-1", "00", "99999999999", "18446744073709551616",
                                                               "18399999999999999999", "14102100", "14103023",
                                                               "18400000000000000000", "17999999999999999999",
                                                               "10000000000000000000", "99999999999999999999",
                                                               "1839999999999999999", "14102024", "14103100", "-0", "-01",
                                                               "999999999", "1000000000"]
    base = [EXAMPLE_LINE, _with("C20", "100084"), _with("id", "1"), _with("hour", "14103023"),
            _with("device_id", "0f7c61dc"), _with("device_model", "caf\u00e9")]
    lines = list(mutated_lines(rng, base, pool, 20_000, min_changes=0))
    taken, declined = _check_batch(codec, lines)
    assert taken > 1000 and declined > 1000  # both paths were exercised


def test_the_key_is_the_device_or_the_ip_for_the_placeholder_device(codec):
    lines = [_with("device_id", "0f7c61dc"), _with("device_id", "a99f214a")]
    batch = batch_encoder(ROWS, codec).encode(lines)
    assert batch.keys == ["0f7c61dc", "ip:ddd2926e"]


@pytest.mark.parametrize("lines", [[], ["\ud800" + EXAMPLE_LINE, EXAMPLE_LINE]])
def test_empty_batches_and_text_arrow_cannot_hold_are_left_to_the_row_path(codec, lines):
    encoder = batch_encoder(ROWS, codec)
    batch = encoder.encode(lines)
    # Arrow cannot hold a lone surrogate, so it declines the whole batch; the C codec only that line.
    assert batch.taken == (1 if lines and codec is RowCodec.NATIVE else 0)
    assert batch.declined == ([0] if batch.taken else list(range(len(lines))))


def test_integer_texts_are_cached_per_column_and_stay_correct_across_batches(codec):
    encoder = batch_encoder(ROWS, codec)
    first = encoder.encode([_with("C1", "1005"), _with("C1", "7")])
    again = encoder.encode([_with("C1", "7"), _with("C1", "1005"), _with("C1", "007")])
    assert again.values[:2] == [first.values[1], first.values[0]]
    assert again.values[2] == first.values[1]  # "007" is the integer 7, as in parse_line
    assert first.taken + again.taken == 5 and first.declined == again.declined == []


def test_auto_uses_the_c_codec_when_it_is_installed_and_fits_the_contract():
    # `make install` builds the codec, so here it must be there: a missing one fails, never skips.
    assert native.native_codec_problem() is None
    assert batch_encoder(ROWS).name == "native"


def test_without_the_c_codec_auto_falls_back_to_arrow_with_a_warning_and_native_fails(monkeypatch, caplog):
    monkeypatch.setattr(native, "_native", None)
    with caplog.at_level("WARNING", logger="include.encoding"):
        assert batch_encoder(ROWS, "auto").name == "arrow"
    assert "avazu_rowcodec is not installed" in caplog.text
    with pytest.raises(RowCodecUnavailable, match="row_codec is native, but the C codec avazu_rowcodec is not installed"):
        batch_encoder(ROWS, "native")


def test_a_c_codec_built_for_another_contract_is_refused(monkeypatch):
    stale = types.SimpleNamespace(**{name: getattr(native._native, name) for name in ("COLUMNS", "PLACEHOLDER_DEVICE_ID")},
                                  CLEAN_ROW_PATTERN=native.CLEAN_ROW_PATTERN.replace("{1,9}", "{1,8}"), encode=None)
    monkeypatch.setattr(native, "_native", stale)
    assert "another clean-row pattern" in native.native_codec_problem()
    assert batch_encoder(ROWS).name == "arrow"
    with pytest.raises(RowCodecUnavailable):
        batch_encoder(ROWS, RowCodec.NATIVE)


def test_the_c_codec_rejects_wrong_arguments_with_a_clear_error():
    codec = native._native
    hours = native.NativeEncoder(ROWS)._hours
    with pytest.raises(TypeError, match="line 1 is bytes, not str"):
        codec.encode([EXAMPLE_LINE, EXAMPLE_LINE.encode()], ROWS.header, hours)
    with pytest.raises(ValueError, match="header is longer than 16 bytes"):
        codec.encode([EXAMPLE_LINE], b"\0" * 17, hours)
    with pytest.raises(ValueError, match="packed uint32"):
        codec.encode([EXAMPLE_LINE], ROWS.header, hours[:-1])
    # Any sequence of lines will do; the result is the same as for a list.
    assert codec.encode((EXAMPLE_LINE,), ROWS.header, hours) == codec.encode([EXAMPLE_LINE], ROWS.header, hours)


def test_the_c_codec_holds_no_reference_to_what_it_was_given_or_returned():
    codec, encoder = native._native, native.NativeEncoder(ROWS)
    lines = [_with("device_id", "a99f214a"), "not a row", "caf\u00e9"] * 1000
    encoder.encode(lines)  # warm up caches (small ints, interned strings)
    before = [sys.getrefcount(line) for line in lines[:3]], sys.getrefcount(None)
    for _ in range(20):
        batch = encoder.encode(lines)
    del batch
    assert ([sys.getrefcount(line) for line in lines[:3]], sys.getrefcount(None)) == before
    assert codec is native._native


def _check_columns(lines: list[str]) -> tuple[int, int]:
    """The C codec's columns() of ``lines``: each clean row's figures are parse_line's, the rest declined
    (exactly the lines encode() declines). Returns (taken, declined)."""
    rows, declined = native.NativeColumns().columns(lines)
    assert declined == native.NativeEncoder(ROWS).encode(lines).declined
    taken = [i for i in range(len(lines)) if i not in set(declined)]
    assert len(rows) == len(taken)
    for row, index in zip(rows, taken):
        record = parse_line(lines[index])
        figures = {name: row[name].item() for name in native.ROW_DTYPE.names}
        hexes = {name: f"{figures.pop(name):08x}" for name in ("site_id", "site_domain", "site_category",
                                                                 "app_id", "app_domain", "app_category")}
        figures["id"] = str(figures["id"])
        assert {**figures, **hexes} == {name: record[name] for name in native.ROW_DTYPE.names}, lines[index]
    return len(taken), len(declined)


def test_the_c_codecs_columns_are_parse_lines_figures(tmp_path):
    path = tmp_path / "avazu.csv.gz"
    generate(GeneratorSpec(20_000, hours=2, seed=12, fault_rates={kind: 0.01 for kind in FaultKind}), path)
    lines = [line for item in LineSource(str(path)) if isinstance(item, TextLines) for line in item.lines]
    taken, declined = _check_columns(lines)
    assert taken > 15_000 and declined > 0
    rng = random.Random(20141022)
    mutated = list(mutated_lines(rng, [EXAMPLE_LINE, _with("id", "18399999999999999999"), _with("hour", "14103023")],
                                 list("0123456789abcdef-,x:g") + ["", "-1", "00", "99"], 5_000, min_changes=0))
    taken, declined = _check_columns(mutated)
    assert taken > 100 and declined > 100


def test_the_c_codecs_columns_reject_wrong_arguments_and_hold_no_references():
    codec, hours = native._native, native.NativeColumns()._hours
    with pytest.raises(TypeError, match="line 1 is bytes, not str"):
        codec.columns([EXAMPLE_LINE, EXAMPLE_LINE.encode()], hours)
    with pytest.raises(ValueError, match="packed uint32"):
        codec.columns([EXAMPLE_LINE], hours[:-1])
    assert codec.columns([], hours) == (b"", [])
    lines = [EXAMPLE_LINE, "not a row", "caf\u00e9"] * 1000
    codec.columns(lines, hours)
    before = [sys.getrefcount(line) for line in lines[:3]]
    for _ in range(20):
        result = codec.columns(lines, hours)
    del result
    assert [sys.getrefcount(line) for line in lines[:3]] == before
