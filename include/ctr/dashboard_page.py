"""The live CTR dashboard's page, served by Streamlit (``python -m include.ctr.dashboard``, ``make dashboard``).

Every figure comes from include/ctr/dashboard.py; this file only lays them out, and reads them
again every ``refresh_s`` seconds. Each section sits in a container with a key (its CSS class
``st-key-<key>``), which is how the browser test finds what it reads.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import altair as alt
import pandas as pd
import streamlit as st

from include.ctr import dashboard as figures
from include.ctr.store import connect, where
from include.errors import PipelineError
from include.health.config import load_health_config
from include.ingest.config import load_ingest_config
from include.kafka.registry import registry_client, schema_fetcher

_VOLUME, _RATE = "#4c78a8", "#e45756"


@st.cache_resource
def _fetch_schema():
    return schema_fetcher(registry_client(os.environ["SCHEMA_REGISTRY_URL"]))


def _ctr_chart(windows: list[figures.CtrWindow], column: str, size: dt.timedelta, time_format: str) -> None:
    """CTR as a line over the windows' impressions as an area, each on its own axis."""
    data = pd.DataFrame({column: [w.start for w in windows],
                         "CTR %": [None if w.ctr is None else 100 * w.ctr for w in windows],
                         "impressions": [w.impressions for w in windows],
                         "clicks": [w.clicks for w in windows]})
    # No more ticks than windows fit in the span: two minutes get a tick a minute, not four "16:42" labels.
    span = max(1, round((windows[-1].start - windows[0].start) / size))
    axis = alt.Axis(format=time_format, tickCount=min(span, 8))
    base = alt.Chart(data).encode(x=alt.X(f"{column}:T", title=None, axis=axis))
    volume = base.mark_area(opacity=0.2, color=_VOLUME).encode(y=alt.Y("impressions:Q", title="impressions (area)"))
    ctr = base.mark_line(color=_RATE, point=alt.OverlayMarkDef(color=_RATE) if len(windows) <= 48 else False).encode(
        y=alt.Y("CTR %:Q", title="CTR % (line)"),
        tooltip=[alt.Tooltip(f"{column}:T", format="%Y-%m-%d %H:%M"), "impressions:Q", "clicks:Q",
                 alt.Tooltip("CTR %:Q", format=".3f")])
    st.altair_chart(alt.layer(volume, ctr).resolve_scale(y="independent").properties(height=300), width="stretch")


def _ranked_table(values: list[figures.RankedValue]) -> pd.DataFrame:
    return pd.DataFrame({"rank": range(1, len(values) + 1),
                         "value": [figures.shown_value(v.value) for v in values],
                         "impressions": [figures.count(v.impressions) for v in values],
                         "clicks": [figures.count(v.clicks) for v in values],
                         "CTR": [figures.percent(v.ctr) for v in values]})


def _store_section(store: figures.StoreFigures, settings: figures.DashboardSettings, threshold: int) -> None:
    with st.container(key="totals"):
        first, last = (store.hours[0].start, store.hours[-1].start) if store.hours else (None, None)
        st.caption(f"Over the Avazu hours the stream has closed: {figures.moment(first, 'Avazu')} to "
                   f"{figures.moment(last, 'Avazu')} (UTC).")
        columns = st.columns(5)
        columns[0].metric("Impressions", figures.count(store.impressions))
        columns[1].metric("Clicks", figures.count(store.clicks))
        columns[2].metric("CTR", figures.percent(store.ctr))
        columns[3].metric("Avazu hours closed", figures.count(len(store.hours)))
        columns[4].metric("Late records", figures.count(store.late_records["hour"]),
                          help="Records whose Avazu hour had closed when they arrived: counted in ctr_late, "
                               "in no hour here.")

    left, right = st.columns(2)
    with left.container(key="hourly"):
        st.subheader("CTR per Avazu hour")
        if store.hours:
            _ctr_chart(store.hours, "hour", figures.HOUR, "%m-%d %H:%M")
        else:
            st.info("No Avazu hour has closed yet: the job writes an hour once its watermark has passed it.")
        st.caption(f"Late: {figures.count(store.late_records['hour'])} records came after their Avazu hour had "
                   "closed (counted in ctr_late, in no hour here).")
    with right.container(key="minutely"):
        st.subheader(f"CTR per minute of arrival (newest {settings.minutes})")
        if store.minutes:
            _ctr_chart(store.minutes, "minute", figures.MINUTE, "%H:%M")
        else:
            st.info("No minute of arrival has closed yet.")
        st.caption(f"Late: {figures.count(store.late_records['minute'])} records arrived after their minute had "
                   "closed (counted in ctr_late, in no minute here).")

    st.subheader("Top and bottom by CTR")
    st.markdown(f"Over the closed hours. **Only values with at least {figures.count(threshold)} impressions are "
                f"ranked**: a site seen once with one click would otherwise top the list at 100%.")
    tabs = st.tabs(list(figures.RANKED.values()))
    for tab, (dimension, name) in zip(tabs, figures.RANKED.items()):
        ranking = store.rankings[dimension]
        with tab, st.container(key=f"ranking_{dimension}"):
            st.caption(f"{figures.count(ranking.ranked)} {name} ranked ({dimension}), "
                       f"{figures.count(ranking.unranked)} with fewer than {figures.count(threshold)} impressions not.")
            best, worst = st.columns(2)
            with best.container(key=f"best_{dimension}"):
                st.markdown("**Highest CTR**")
                st.table(_ranked_table(ranking.best), hide_index=True)
            with worst.container(key=f"worst_{dimension}"):
                st.markdown("**Lowest CTR**")
                st.table(_ranked_table(ranking.worst), hide_index=True)


def _progress_section(progress: list[figures.ClockProgress]) -> None:
    with st.container(key="watermark"):
        st.subheader("Watermark")
        st.table(pd.DataFrame({
            "clock": [p.clock for p in progress],
            "watermark at least": [figures.moment(p.watermark, p.clock) for p in progress],
            "newest record": [figures.moment(p.newest_record, p.clock) for p in progress],
            "trails by": [figures.duration(p.trail) for p in progress],
        }), hide_index=True)
        st.caption("The job writes a window once its watermark has passed the window's end, so the newest window "
                   "in the store says where the watermark is at least. The newest record: the newest Avazu hour "
                   "ingested, and the newest record's Kafka timestamp in the raw topic. The watermark trails them "
                   "by the job's lateness (by default 1 h and 5 s) while records flow; a window closes only once "
                   "records after it arrive.")


def _dlq_section(ingestion: figures.IngestionFigures, max_ratio: float) -> None:
    with st.container(key="dlq"):
        st.subheader("Dead-letter ratio per Avazu hour")
        if not ingestion.hours:
            st.info("No Avazu hour has been ingested yet.")
            return
        hours = ingestion.hours
        chart = pd.DataFrame({"hour": [str(h.hour) for h in hours], "DLQ %": [100 * h.ratio for h in hours],
                              "over": [h.ratio > max_ratio for h in hours]})
        bars = alt.Chart(chart).mark_bar().encode(
            x=alt.X("hour:O", title="Avazu hour"), y=alt.Y("DLQ %:Q", title="DLQ %"),
            color=alt.condition("datum.over", alt.value(_RATE), alt.value(_VOLUME)), tooltip=["hour", "DLQ %"])
        limit = alt.Chart(pd.DataFrame({"limit": [100 * max_ratio]})).mark_rule(strokeDash=[4, 4]).encode(
            y=alt.Y("limit:Q", title="DLQ %"))
        st.altair_chart(alt.layer(bars, limit).properties(height=220), width="stretch")
        st.table(pd.DataFrame({
            "hour": [str(h.hour) for h in hours],
            "rows read": [figures.count(h.rows_read) for h in hours],
            "dead-lettered": [figures.count(h.dead_lettered) for h in hours],
            "DLQ ratio": [figures.percent(h.ratio) for h in hours],
            "over the limit": ["yes" if h.ratio > max_ratio else "" for h in hours],
        }), hide_index=True)
        st.caption(f"From the ingestion's checkpoints, as pipeline_health's dlq_ratio check reads them; its limit: "
                   f"{figures.percent(max_ratio)} of an hour's rows.")


def _page() -> None:
    st.set_page_config(page_title="Avazu CTR, live", layout="wide")
    settings = figures.load_dashboard_settings()
    url = os.environ["POSTGRES_URL"]
    st.title("Avazu CTR, live")
    threshold = st.number_input("Minimum impressions to rank a value", min_value=1, value=settings.min_impressions,
                                step=100, key="min_impressions")

    @st.fragment(run_every=settings.refresh_s)
    def live() -> None:
        began = time.monotonic()
        store = ingestion = None
        try:
            with connect(url) as connection:
                store = figures.read_store(connection, settings, int(threshold))
        except PipelineError as error:
            st.error(str(error))
        try:
            ingest = load_ingest_config()
            ingestion = figures.read_ingestion(figures.kafka_settings(), _fetch_schema(), ingest.topics)
        except PipelineError as error:
            st.warning(f"The ingestion's checkpoints could not be read: {error}")
        if store is not None:
            _store_section(store, settings, int(threshold))
        if store is not None and ingestion is not None:
            _progress_section(figures.stream_progress(store, ingestion))
        if ingestion is not None:
            _dlq_section(ingestion, load_health_config().dlq.max_ratio)
        st.caption(f"Read from {where(url)} and {os.environ['KAFKA_BOOTSTRAP_SERVERS']} at "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC in {time.monotonic() - began:.2f} s; "
                   f"read again every {settings.refresh_s:g} s.")

    live()


# Streamlit runs the page as __main__; an import (the error table's walk over include/) draws nothing.
if __name__ == "__main__":
    _page()
