"""Turn ``data_stats.json`` into PNG plots and a Markdown report a person can learn the data from.

Plots use matplotlib's object API with the Agg canvas (no pyplot, no global backend state), so
rendering is safe inside Airflow workers and threads.
"""

from __future__ import annotations

import io
import json
import logging
from collections import defaultdict
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from include import storage
from include.avazu.contract import COLUMNS, hour_to_datetime
from include.eda.survey import STATS_FILE

log = logging.getLogger(__name__)

REPORT_FILE = "eda_report.md"
PLOTS_FOLDER = "plots"
_TOP_IN_REPORT = 10


def write_report(output_uri: str) -> dict[str, Any]:
    """Read ``data_stats.json`` under ``output_uri``; write the report and ``plots/`` beside it."""
    output = storage.resolve_local(output_uri)
    stats = json.loads(storage.read_bytes(storage.join_uri(output, STATS_FILE)))
    plots = render_plots(stats)
    plot_uris = []
    for name, png in plots.items():
        uri = storage.join_uri(output, PLOTS_FOLDER, name)
        storage.write_bytes(uri, png)
        plot_uris.append(uri)
    report_uri = storage.join_uri(output, REPORT_FILE)
    storage.write_text(report_uri, render_markdown(stats, list(plots)))
    log.info("wrote %s and %d plots under %s", REPORT_FILE, len(plots), output)
    return {
        "report_uri": report_uri,
        "plot_uris": plot_uris,
        "stats_uri": storage.join_uri(output, STATS_FILE),
    }


def render_plots(stats: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes by file name: CTR by hour, rows per hour, CTR by banner_pos and device_type."""
    hourly = stats["hourly"]
    times = [hour_to_datetime(h["hour"], check_span=False) for h in hourly]
    plots = {}

    figure, axes = _figure()
    axes.plot(
        times,
        [100 * (h["ctr"] or 0) for h in hourly],
        color="tab:blue",
        linewidth=1.2,
        label="CTR per hour",
    )
    if stats["ctr"] is not None:
        axes.axhline(
            100 * stats["ctr"],
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label=f"overall {100 * stats['ctr']:.2f}%",
        )
    axes.set(title="Click-through rate by hour", xlabel="hour (UTC)", ylabel="CTR (%)")
    axes.legend(loc="upper right")
    figure.autofmt_xdate()
    plots["ctr_by_hour.png"] = _png(figure)

    figure, axes = _figure()
    axes.bar(times, [h["rows"] for h in hourly], width=1 / 24, color="tab:gray", align="edge")
    axes.set(title="Rows per hour", xlabel="hour (UTC)", ylabel="rows")
    figure.autofmt_xdate()
    plots["rows_per_hour.png"] = _png(figure)

    figure = Figure(figsize=(10, 4), layout="constrained")
    for position, name in enumerate(("banner_pos", "device_type"), start=1):
        axes = figure.add_subplot(1, 2, position)
        table = stats["ctr_by"][name]
        positions = range(len(table))
        bars = axes.bar(positions, [100 * (row["ctr"] or 0) for row in table], color="tab:blue")
        axes.set_xticks(positions, [str(row["value"]) for row in table])
        axes.bar_label(bars, labels=[_short(row["rows"]) for row in table], fontsize=8, padding=2)
        axes.set(title=f"CTR by {name} (bar labels: rows)", xlabel=name, ylabel="CTR (%)")
    plots["ctr_by_banner_pos_and_device_type.png"] = _png(figure)
    return plots


def _figure() -> tuple[Figure, Any]:
    figure = Figure(figsize=(10, 4), layout="constrained")
    return figure, figure.add_subplot()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def render_markdown(stats: dict[str, Any], plot_names: list[str]) -> str:
    """The report text; images are linked relative to the report (``plots/<name>``)."""
    rows, span = stats["rows"], stats["time_range"]
    size = stats["bytes"]
    out = [
        "# Avazu data set: exploratory report",
        "",
        f"Source `{stats['source_uri']}`, computed {stats['computed_at']} in one streaming pass.",
        "",
        "## Overview",
        "",
    ]
    out += _table(
        ["Measure", "Value"],
        [
            ["Rows read (after the header)", f"{rows['read']:,}"],
            ["Good rows", f"{rows['good']:,}"],
            ["Bad rows", f"{rows['bad']:,} ({_percent(rows['bad'], rows['read'])})"],
            ["Clicks", f"{stats['clicks']:,}"],
            ["Overall CTR", _pct(stats["ctr"])],
            ["Time range (UTC)", f"{span['first_utc']} .. {span['last_utc']}"],
            ["Hours with data", span["hours_present"]],
            ["Rows out of hour order", f"{span['out_of_order_rows']:,}"],
            ["Duplicate ids", f"{stats['duplicate_ids']['duplicate_rows']:,}"],
            [
                "Size",
                f"{size['compressed'] / 1e6:,.1f} MB read, "
                f"{size['decompressed'] / 1e6:,.1f} MB CSV",
            ],
            ["Read rate", f"{stats['rows_per_second']:,.0f} rows/s"],
        ],
    )
    out += ["## Columns", ""]
    out += _table(
        ["Column", "Type", "Nullable", "Empty values", "Meaning"],
        [
            [
                f"`{c.name}`",
                c.kind.value,
                "yes" if c.nullable else "no",
                f"{stats['nulls'][c.name]:,}",
                c.doc,
            ]
            for c in COLUMNS
        ],
    )
    out += ["## Click-through rate", "", "### By hour", ""]
    out += _image("ctr_by_hour.png", "CTR by hour", plot_names)
    out += _hourly_summary(stats["hourly"])
    out += ["### By banner position and device type", ""]
    out += _image("ctr_by_banner_pos_and_device_type.png", "CTR by segment", plot_names)
    for name, table in stats["ctr_by"].items():
        out += [f"**{name}**", ""]
        out += _table(
            ["Value", "Rows", "Share", "Clicks", "CTR"],
            [
                [
                    r["value"],
                    f"{r['rows']:,}",
                    _percent(r["rows"], rows["good"]),
                    f"{r['clicks']:,}",
                    _pct(r["ctr"]),
                ]
                for r in table
            ],
        )
    out += ["## Volume", ""]
    out += _image("rows_per_hour.png", "Rows per hour", plot_names)
    if stats["hourly"]:
        busiest = max(stats["hourly"], key=lambda h: h["rows"])
        quietest = min(stats["hourly"], key=lambda h: h["rows"])
        out += [
            f"Busiest hour {busiest['hour']} with {busiest['rows']:,} rows; "
            f"quietest {quietest['hour']} with {quietest['rows']:,}.",
            "",
        ]
    out += _categories_section(stats["top_categories"])
    out += _quality_section(stats)
    out += _samples_section(stats)
    return "\n".join(out)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _hourly_summary(hourly: list[dict[str, Any]]) -> list[str]:
    if not hourly:
        return ["No hours with good rows.", ""]
    low = min(hourly, key=lambda h: h["ctr"] or 0)
    high = max(hourly, key=lambda h: h["ctr"] or 0)
    by_hour_of_day: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for h in hourly:
        totals = by_hour_of_day[h["hour"] % 100]
        totals[0] += h["rows"]
        totals[1] += h["clicks"]
    out = [
        f"CTR per hour ranges from {_pct(low['ctr'])} ({low['hour']}) "
        f"to {_pct(high['ctr'])} ({high['hour']}).",
        "",
        "Averaged over days, by hour of day:",
        "",
    ]
    return out + _table(
        ["Hour of day", "Rows", "CTR"],
        [
            [f"{hod:02d}", f"{n:,}", _percent(c, n)]
            for hod, (n, c) in sorted(by_hour_of_day.items())
        ],
    )


def _categories_section(top_categories: dict[str, Any]) -> list[str]:
    out = [
        "## Top categories",
        "",
        'Site and app columns are hashed. The "no site" / "no app" placeholders show up as the '
        "top value of the other side's columns.",
        "",
    ]
    for name, entry in top_categories.items():
        note = " (approximate: too many distinct values to count)" if entry["approximate"] else ""
        out += [f"**{name}**: {entry['distinct']:,} distinct values{note}", ""]
        out += _table(
            ["Value", "Rows", "Share"],
            [
                [f"`{r['value']}`", f"{r['rows']:,}", _pct(r["share"])]
                for r in entry["top"][:_TOP_IN_REPORT]
            ],
        )
    return out


def _quality_section(stats: dict[str, Any]) -> list[str]:
    rows, bad, duplicates = stats["rows"], stats["bad_rows"], stats["duplicate_ids"]
    out = [
        "## Data quality",
        "",
        f"Every row read is either good or bad: {rows['read']:,} read = "
        f"{rows['good']:,} good + {rows['bad']:,} bad.",
        "",
    ]
    out += _table(
        ["Reason", "Bad rows"], [[reason, f"{n:,}"] for reason, n in bad["by_reason"].items()]
    )
    if bad["by_reason_and_field"]:
        out += ["By reason and column:", ""]
        out += _table(
            ["Reason:column", "Rows"],
            [[k, f"{n:,}"] for k, n in bad["by_reason_and_field"].items()],
        )
    for reason, examples in bad["examples"].items():
        out += [f"Examples of {reason}:", "", "```"]
        out += [f"line {e['line_number']}: {e['message']}\n    {e['raw'][:160]}" for e in examples]
        out += ["```", ""]
    empty = ", ".join(f"{name} {n:,}" for name, n in stats["nulls"].items() if n) or "none"
    return out + [
        f"Duplicate ids: {duplicates['duplicate_rows']:,} good rows repeat an id seen earlier "
        f"({duplicates['ids_seen_more_than_once']:,} ids occur more than once, "
        f"{duplicates['distinct_ids']:,} distinct). Method: {duplicates['method']}.",
        "",
        f"Empty values in good rows: {empty}.",
        "",
    ]


def _samples_section(stats: dict[str, Any]) -> list[str]:
    plan = stats.get("sampling_plan", {})
    out = ["## Samples", ""]
    out += _table(
        ["File", "Kind", "Rows"],
        [[f"`{s['name']}`", s["kind"], f"{s['rows']:,}"] for s in stats.get("samples", [])],
    )
    return out + [
        "Head samples are the first good rows; the uniform sample is a reservoir (Algorithm L) "
        f"over all good rows; the per-hour sample keeps up to {plan.get('per_hour_size', '?')} "
        f"rows per hour, drawn the same way. Seed {plan.get('seed', '?')}: the same file and seed "
        "give the same samples. Samples keep the rows' original text in file order; "
        "`bad_rows_head.csv` lists the first bad rows.",
        "",
    ]


def _image(name: str, title: str, plot_names: list[str]) -> list[str]:
    return [f"![{title}]({PLOTS_FOLDER}/{name})", ""] if name in plot_names else []


def _pct(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{100 * ratio:.2f}%"


def _percent(part: int, whole: int) -> str:
    return _pct(part / whole if whole else None)


def _short(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)
