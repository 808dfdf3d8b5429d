"""Benchmark the one-pass statistics-and-sampling survey against the naive pandas approach.

For each size it generates an Avazu-format gzip file once (kept in --workdir), then runs, each in
a fresh child process so that peak memory is that run's alone (``os.wait4`` rusage):

* ``survey``  - include.eda.survey: streaming read + validation + stats + samples, bounded memory;
* ``read``    - the reader and row validation alone (where the survey's time goes);
* ``pandas``  - the seed's way: ``pandas.read_csv`` of the whole file, then the same statistics
  and samples with DataFrame operations (bad lines skipped, no line numbers, no reasons);
* ``duckdb``  - DuckDB (2 threads; the lock pins it, for the CTR batch):
  ``read_csv`` into a table in memory, then CTR by hour / banner_pos / device_type, nulls per
  column, the top 20 of five categoricals, duplicate ids, the head samples, a 10k reservoir and
  100 rows per hour (bad lines skipped by ``ignore_errors``: no reasons, no line numbers either).

    python bench/bench_sampling.py --rows 1000000 4000000

The last line is JSON: each mode's rows/s and peak RSS per size, and the survey's rate over each peer's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _child_survey(source: str, out: str) -> dict:
    from include.eda.sampling import SamplingPlan
    from include.eda.survey import survey

    result = survey(source, out, SamplingPlan(), progress_every_s=3600)
    return {
        "rows": result.rows_read,
        "good": result.good_rows,
        "bad": result.bad_rows,
        "ctr": result.ctr,
    }


def _child_read(source: str, out: str) -> dict:
    from include.avazu.reader import AvazuReader

    reader = AvazuReader(source, progress_every_s=3600)
    for _ in reader:
        pass
    return {
        "rows": reader.progress.rows_read,
        "good": reader.progress.good_rows,
        "bad": reader.progress.bad_rows,
    }


def _child_pandas(source: str, out: str) -> dict:
    import pandas as pd

    frame = pd.read_csv(source, on_bad_lines="skip", encoding_errors="replace", dtype={"id": str})
    # Rows pandas could parse but that break the contract (non-numeric ints, bad hours) are dropped
    # the way an analyst would: coerce and drop, which is also what it costs.
    numeric = ["click", "hour", "banner_pos", "device_type", "device_conn_type"]
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame.dropna(subset=numeric)
    clicks = frame["click"]
    stats = {
        "rows": len(frame),
        "ctr": float(clicks.mean()),
        "hourly": clicks.groupby(frame["hour"]).agg(["count", "sum"]).to_dict(),
        "banner_pos": clicks.groupby(frame["banner_pos"]).agg(["count", "sum"]).to_dict(),
        "device_type": clicks.groupby(frame["device_type"]).agg(["count", "sum"]).to_dict(),
        "device_conn_type": clicks.groupby(frame["device_conn_type"])
        .agg(["count", "sum"])
        .to_dict(),
        "duplicate_ids": int(frame["id"].duplicated().sum()),
        "nulls": frame.isna().sum().to_dict(),
        "top": {
            c: frame[c].value_counts().head(20).to_dict()
            for c in (
                "site_id",
                "site_domain",
                "site_category",
                "app_id",
                "app_domain",
                "app_category",
            )
        },
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    for size in (1_000, 10_000, 50_000):
        frame.head(size).to_csv(f"{out}/head_{size}.csv", index=False)
    frame.sample(10_000, random_state=7).sort_index().to_csv(f"{out}/uniform.csv", index=False)
    frame.groupby("hour", group_keys=False).apply(
        lambda g: g.sample(min(len(g), 100), random_state=7)
    ).to_csv(f"{out}/per_hour.csv", index=False)
    Path(f"{out}/stats.json").write_text(json.dumps(stats, default=str))
    return {"rows": len(frame), "ctr": stats["ctr"]}


def _child_duckdb(source: str, out: str) -> dict:
    import duckdb

    Path(out).mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("CREATE TABLE t AS SELECT * FROM read_csv(?, header = true, ignore_errors = true)", [source])
    columns = [row[0] for row in con.execute("DESCRIBE t").fetchall()]

    def rows(sql: str) -> list:
        return con.execute(sql).fetchall()

    stats = {
        "rows": rows("SELECT count(*) FROM t")[0][0],
        "ctr": rows("SELECT avg(click) FROM t")[0][0],
        **{f"by_{c}": rows(f"SELECT {c}, count(*), sum(click) FROM t GROUP BY {c} ORDER BY {c}")
           for c in ("hour", "banner_pos", "device_type", "device_conn_type")},
        "duplicate_ids": rows("SELECT count(*) - count(DISTINCT id) FROM t")[0][0],
        "nulls": dict(zip(columns, rows("SELECT " + ", ".join(f"count(*) - count({c})" for c in columns)
                                        + " FROM t")[0])),
        "top": {c: rows(f"SELECT {c}, count(*) n FROM t GROUP BY {c} ORDER BY n DESC LIMIT 20")
                for c in ("site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category")},
    }
    for size in (1_000, 10_000, 50_000):
        con.execute(f"COPY (SELECT * FROM t LIMIT {size}) TO '{out}/head_{size}.csv' (HEADER)")
    con.execute(f"COPY (SELECT * FROM t USING SAMPLE reservoir(10000 ROWS) REPEATABLE (7)) TO '{out}/uniform.csv' (HEADER)")
    con.execute(f"COPY (SELECT * EXCLUDE (n) FROM (SELECT *, row_number() OVER (PARTITION BY hour ORDER BY hash(id)) n "
                f"FROM t) WHERE n <= 100) TO '{out}/per_hour.csv' (HEADER)")
    Path(f"{out}/stats.json").write_text(json.dumps(stats, default=str))
    return {"rows": stats["rows"], "ctr": stats["ctr"]}


CHILDREN = {"survey": _child_survey, "read": _child_read, "pandas": _child_pandas, "duckdb": _child_duckdb}
_HEADER = "mode      file rows   seconds     rows/s  peak RSS MB"


def _line(result: dict) -> str:
    rate = result["file_rows"] / result["seconds"]
    return (
        f"{result['mode']:<7} {result['file_rows']:>11,} {result['seconds']:>9.1f} "
        f"{rate:>10,.0f} {result['peak_rss_mb']:>12.0f}"
    )


def _calibration_s() -> float:
    # Figures from a shared VM mean little without a yardstick; this loop takes ~0.15-0.2 s on
    # a current laptop core.
    started = time.perf_counter()
    sum(range(10**7))
    return time.perf_counter() - started


def _measure(mode: str, rows: int, source: Path, out: Path) -> dict:
    """Run one mode in a child process; wall time and that child's peak RSS."""
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, str(source), str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.monotonic() - started
    output = child.stdout.read()
    child.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"{mode} on {source} failed with exit status {os.waitstatus_to_exitcode(status)}"
        )
    result = json.loads(output.strip().splitlines()[-1])
    # ru_maxrss is in kilobytes on Linux.
    return {
        "mode": mode,
        "file_rows": rows,
        "seconds": elapsed,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        **result,
    }


def _source(workdir: Path, rows: int) -> Path:
    from include.avazu.generator import FaultKind, GeneratorSpec, generate

    path = workdir / f"avazu_{rows}.csv.gz"
    if not path.exists():
        truth = generate(
            GeneratorSpec(rows, seed=7, fault_rates={kind: 0.0001 for kind in FaultKind}), path
        )
        size_mb = path.stat().st_size / 1e6
        print(f"generated {path} ({rows:,} rows, {size_mb:.0f} MB) in {truth.elapsed_s:.1f}s")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument(
        "--modes", nargs="+", choices=list(CHILDREN), default=["survey", "read", "pandas", "duckdb"]
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/avazu-bench"))
    parser.add_argument(
        "--child", nargs=3, metavar=("MODE", "SOURCE", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        mode, source, out = args.child
        print(json.dumps(CHILDREN[mode](source, out)))
        return 0

    args.workdir.mkdir(parents=True, exist_ok=True)
    if "duckdb" in args.modes and importlib.util.find_spec("duckdb") is None:
        print("duckdb is not installed, so that peer is skipped (make install installs the lock, which has it)")
        args.modes.remove("duckdb")
    print(f"machine speed: sum(range(10**7)) takes {_calibration_s():.2f} s here")
    print(_HEADER)
    results = []
    for rows in args.rows:
        source = _source(args.workdir, rows)
        for mode in args.modes:
            results.append(_measure(mode, rows, source, args.workdir / f"out_{mode}_{rows}"))
            print(_line(results[-1]), flush=True)
    print(f"\n{_HEADER}")
    for result in results:
        print(_line(result))
    if len(args.rows) > 1:
        small, large = min(args.rows), max(args.rows)
        for mode in args.modes:
            peak = {r["file_rows"]: r["peak_rss_mb"] for r in results if r["mode"] == mode}
            growth = peak[large] / peak[small]
            print(f"{mode}: peak memory at {large:,} rows is {growth:.2f}x that at {small:,} rows")
    figures = {f"{r['mode']}_{r['file_rows']}": {"rows_per_s": round(r["file_rows"] / r["seconds"]),
                                                 "peak_rss_mb": round(r["peak_rss_mb"])} for r in results}
    for rows in args.rows:
        ours = figures.get(f"survey_{rows}")
        for peer in ("pandas", "duckdb"):
            theirs = figures.get(f"{peer}_{rows}")
            if ours and theirs:
                figures[f"survey_over_{peer}_{rows}"] = round(ours["rows_per_s"] / theirs["rows_per_s"], 2)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
