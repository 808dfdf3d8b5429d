"""The health report a person reads: Markdown and HTML with PNG plots, in a folder or under s3://.

Each run writes ``<report_uri>/<run>/report.md``, ``report.html``, ``lag.png`` and
``dlq_ratio.png``, and copies the two documents to ``<report_uri>/latest.md`` / ``latest.html``
(whose images point into the run's folder).
"""

from __future__ import annotations

import datetime as dt
import html
import io
import re
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.dates as mdates  # noqa: E402

from include import storage  # noqa: E402
from include.health.checks import CHECKS  # noqa: E402
from include.health.outcome import CheckOutcome  # noqa: E402
from include.kafka_admin.topics import format_table  # noqa: E402


@dataclass(frozen=True)
class ReportLocation:
    folder: str
    markdown: str
    html: str
    latest_html: str

    def as_dict(self) -> dict[str, str]:
        return {"folder": self.folder, "markdown": self.markdown, "html": self.html, "latest_html": self.latest_html}


def summary_rows(outcomes: list[CheckOutcome]) -> list[dict[str, str]]:
    return [{"check": o.check, "status": o.status, "seconds": f"{o.elapsed_s:.1f}", "finding": o.summary}
            for o in outcomes]


def summary_table(outcomes: list[CheckOutcome], missing: list[str] = ()) -> str:
    """The plain-text table of every check's status and finding (task log, demo)."""
    rows = summary_rows(outcomes) + [{"check": name, "status": "ERROR", "seconds": "",
                                      "finding": "the check did not finish (see its task log)"} for name in missing]
    return format_table(rows, ["check", "status", "seconds", "finding"])


def _run_folder_name(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_") or "run"


# The least time the lag plot spans: one sample (a first run) would otherwise get an axis of years.
MIN_LAG_WINDOW_S = 600


def lag_time_window(times: list[float]) -> tuple[dt.datetime, dt.datetime]:
    """The time axis of the lag plot: the samples' span, widened about its middle to MIN_LAG_WINDOW_S."""
    first, last = min(times), max(times)
    widen = max(0.0, MIN_LAG_WINDOW_S - (last - first)) / 2
    return (dt.datetime.fromtimestamp(first - widen, dt.timezone.utc),
            dt.datetime.fromtimestamp(last + widen, dt.timezone.utc))


def plot_lag(outcomes: list[CheckOutcome]) -> bytes | None:
    """Lag over time per group: records summed over its partitions, seconds of its worst partition."""
    lag = next((o.series.get("lag") for o in outcomes if o.check == "consumer_lag"), None)
    if not lag:
        return None
    groups: dict[str, dict[float, list[dict]]] = {}
    for key, points in lag.items():
        group = key.split("|", 1)[0]
        for point in points:
            groups.setdefault(group, {}).setdefault(point["at"], []).append(point)
    fig, (records, seconds) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    records.set_xlim(*lag_time_window([at for by_time in groups.values() for at in by_time]))
    records.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=dt.timezone.utc))
    for group, by_time in sorted(groups.items()):
        times = sorted(by_time)
        moments = [dt.datetime.fromtimestamp(t, dt.timezone.utc) for t in times]
        records.plot(moments, [sum(p["lag"] for p in by_time[t]) for t in times], marker="o", label=group)
        seconds.plot(moments, [max(p["lag_seconds"] for p in by_time[t]) for t in times], marker="o", label=group)
    for axis, label in ((records, "lag (records, all partitions)"), (seconds, "lag (seconds, worst partition)")):
        axis.set_ylabel(label)
        bottom, top = axis.get_ylim()
        axis.set_ylim(0, max(top, 1))
    seconds.set_xlabel("sample time (UTC)")
    records.set_title("Consumer lag per group")
    records.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    return _png(fig)


def plot_dlq_ratio(outcomes: list[CheckOutcome], threshold: float | None) -> bytes | None:
    points = next((o.series.get("dlq_ratio") for o in outcomes if o.check == "dlq_ratio"), None)
    if not points:
        return None
    fig, axis = plt.subplots(figsize=(9, 3.5))
    hours = [str(p["hour"]) for p in points]
    ratios = [100 * p["ratio"] for p in points]
    colors = ["#c0392b" if threshold is not None and p["ratio"] > threshold else "#2e86c1" for p in points]
    axis.bar(range(len(hours)), ratios, color=colors)
    if threshold is not None:
        axis.axhline(100 * threshold, color="#c0392b", linestyle="--", label=f"limit {threshold:.2%}")
        axis.legend(fontsize=8)
    step = max(1, len(hours) // 24)
    axis.set_xticks(range(0, len(hours), step), hours[::step], rotation=60, fontsize=7)
    axis.set_ylabel("dead-lettered (%)")
    axis.set_title("DLQ ratio per ingested hour (YYMMDDHH)")
    return _png(fig)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def render_markdown(outcomes: list[CheckOutcome], title: str, images: dict[str, str], missing: list[str]) -> str:
    failed = [o.check for o in outcomes if not o.ok] + list(missing)
    verdict = f"**{len(failed)} of {len(outcomes) + len(missing)} checks failed**: {', '.join(failed)}" if failed \
        else f"**All {len(outcomes)} checks passed.**"
    parts = [f"# {title}", "", verdict, "", "| check | status | finding |", "|---|---|---|"]
    parts += [f"| {o.check} | {o.status} | {_md_cell(o.summary)} |" for o in outcomes]
    parts += [f"| {name} | ERROR | the check did not finish (see its task log) |" for name in missing]
    for name, path in images.items():
        parts += ["", f"![{name}]({path})"]
    for o in outcomes:
        parts += ["", f"## {o.check}: {o.status}", "", f"*{_description(o.check)}*", "", o.summary, ""]
        if o.rows:
            parts += ["| " + " | ".join(o.columns) + " |", "|" + "---|" * len(o.columns)]
            parts += ["| " + " | ".join(_md_cell(str(r.get(c, ""))) for c in o.columns) + " |" for r in o.rows[:200]]
            if len(o.rows) > 200:
                parts.append(f"\n({len(o.rows) - 200} more rows)")
    return "\n".join(parts) + "\n"


def _description(check: str) -> str:
    return CHECKS[check].description if check in CHECKS else ""


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_html(outcomes: list[CheckOutcome], title: str, images: dict[str, str], missing: list[str]) -> str:
    esc = html.escape
    failed = [o.check for o in outcomes if not o.ok] + list(missing)
    verdict = (f'<p class="bad">{len(failed)} of {len(outcomes) + len(missing)} checks failed: {esc(", ".join(failed))}</p>'
               if failed else f'<p class="good">All {len(outcomes)} checks passed.</p>')
    summary = "".join(f'<tr class="{"good" if o.ok else "bad"}"><td>{esc(o.check)}</td><td>{o.status}</td>'
                      f"<td>{o.elapsed_s:.1f} s</td><td>{esc(o.summary)}</td></tr>" for o in outcomes)
    summary += "".join(f'<tr class="bad"><td>{esc(n)}</td><td>ERROR</td><td></td>'
                       "<td>the check did not finish (see its task log)</td></tr>" for n in missing)
    plots = "".join(f'<figure><img src="{esc(path)}" alt="{esc(name)}"></figure>' for name, path in images.items())
    sections = []
    for o in outcomes:
        table = ""
        if o.rows:
            head = "".join(f"<th>{esc(c)}</th>" for c in o.columns)
            body = "".join("<tr>" + "".join(f"<td>{esc(str(r.get(c, '')))}</td>" for c in o.columns) + "</tr>"
                           for r in o.rows[:200])
            table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        sections.append(f'<section><h2 class="{"good" if o.ok else "bad"}">{esc(o.check)}: {o.status}</h2>'
                        f"<p><em>{esc(_description(o.check))}</em></p><p>{esc(o.summary)}</p>{table}</section>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f2f2f2; }}
.good {{ color: #1e7b34; }} .bad {{ color: #b03a2e; }}
tr.good td:nth-child(2) {{ color: #1e7b34; font-weight: bold; }} tr.bad td:nth-child(2) {{ color: #b03a2e; font-weight: bold; }}
tr.good, tr.bad {{ color: #222; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
</style></head>
<body><h1>{esc(title)}</h1>{verdict}
<table><thead><tr><th>check</th><th>status</th><th>time</th><th>finding</th></tr></thead><tbody>{summary}</tbody></table>
{plots}
{"".join(sections)}
</body></html>
"""


def write_report(outcomes: list[CheckOutcome], report_uri: str, run_id: str, *, missing: list[str] = (),
                 dlq_threshold: float | None = None, generated_at: dt.datetime | None = None) -> ReportLocation:
    """Write the run's report and plots under ``report_uri`` (a folder or s3:// prefix); returns where."""
    report_uri = storage.resolve_local(report_uri)
    when = (generated_at or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    title = f"Pipeline health - {when} ({run_id})"
    folder_name = _run_folder_name(run_id)
    folder = storage.join_uri(report_uri, folder_name)
    images = {}
    for name, png in (("lag", plot_lag(outcomes)), ("dlq_ratio", plot_dlq_ratio(outcomes, dlq_threshold))):
        if png is not None:
            storage.write_bytes(storage.join_uri(folder, f"{name}.png"), png)
            images[name] = f"{name}.png"
    markdown = storage.join_uri(folder, "report.md")
    page = storage.join_uri(folder, "report.html")
    storage.write_text(markdown, render_markdown(outcomes, title, images, list(missing)))
    storage.write_text(page, render_html(outcomes, title, images, list(missing)))
    # latest.* sit beside the run folders; their images point into the run's folder.
    moved = {name: f"{folder_name}/{path}" for name, path in images.items()}
    latest = storage.join_uri(report_uri, "latest.html")
    storage.write_text(storage.join_uri(report_uri, "latest.md"), render_markdown(outcomes, title, moved, list(missing)))
    storage.write_text(latest, render_html(outcomes, title, moved, list(missing)))
    return ReportLocation(folder, markdown, page, latest)
