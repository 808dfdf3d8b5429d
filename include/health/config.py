"""The pipeline-health thresholds (include/config/health.yaml): read once, checked, one sentence if wrong."""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from include.errors import PermanentError
from include.paths import CONFIG_DIR, settings_file
from include.settings import Checks, read_yaml_file

DEFAULT_CONFIG_PATH = CONFIG_DIR / "health.yaml"


class HealthConfigError(PermanentError, ValueError):
    """The health settings are wrong; the message names the file and the key."""


@dataclass(frozen=True)
class LagLimits:
    groups: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    max_records: int = 100_000
    max_seconds: float = 900.0
    stall_after_s: float = 900.0
    window_samples: int = 12
    breach_samples: int = 3
    max_sample_age_s: float = 86_400.0


@dataclass(frozen=True)
class DlqLimits:
    max_ratio: float = 0.01
    min_rows: int = 1000


@dataclass(frozen=True)
class ReconciliationSettings:
    lookback_hours: int = 24
    scan_margin_s: float = 3600.0


@dataclass(frozen=True)
class CtrReconciliationSettings:
    lookback_hours: int = 24
    settle_s: float = 30.0


@dataclass(frozen=True)
class ThroughputLimits:
    recent_runs: int = 12
    ingest_min_rows_per_s: float = 20_000.0
    ingest_min_rows: int = 100_000
    processor_min_records_per_s: float = 50.0
    processor_groups: tuple[str, ...] = ("stream-*",)


@dataclass(frozen=True)
class BrokerLimits:
    min_brokers: int = 1


@dataclass(frozen=True)
class HealthConfig:
    lag: LagLimits = field(default_factory=LagLimits)
    dlq: DlqLimits = field(default_factory=DlqLimits)
    reconciliation: ReconciliationSettings = field(default_factory=ReconciliationSettings)
    ctr_reconciliation: CtrReconciliationSettings = field(default_factory=CtrReconciliationSettings)
    throughput: ThroughputLimits = field(default_factory=ThroughputLimits)
    broker: BrokerLimits = field(default_factory=BrokerLimits)
    report_uri: str = "reports/health"
    state_uri: str = "reports/health/state.json"
    source: str = "<defaults>"

    def replace(self, **changes: Any) -> HealthConfig:
        """A copy with sections or values replaced (tests and one-off runs), e.g. ``lag={"breach_samples": 1}``."""
        values = {}
        for name, value in changes.items():
            current = getattr(self, name)
            values[name] = dataclasses.replace(current, **value) if isinstance(value, dict) else value
        return dataclasses.replace(self, **values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CHECK = Checks(HealthConfigError)
_SECTIONS = {"lag": LagLimits, "dlq": DlqLimits, "reconciliation": ReconciliationSettings,
             "ctr_reconciliation": CtrReconciliationSettings, "throughput": ThroughputLimits, "broker": BrokerLimits}


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``name`` (a group id) matches any of the shell-style ``patterns`` of a settings list."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _patterns(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise HealthConfigError(f"{where} must be a list of group patterns, not {value!r}")
    return tuple(_CHECK.text(f"{where}[{i}]", item) for i, item in enumerate(value))


def parse_health_config(document: Any, source: str) -> HealthConfig:
    """Check a parsed YAML document and turn it into a :class:`HealthConfig`."""
    top = _CHECK.mapping(source, document, {*_SECTIONS, "report_uri", "state_uri"})
    sections: dict[str, dict[str, Any]] = {
        name: _CHECK.mapping(f"{source}: {name}", top.get(name), {f.name for f in dataclasses.fields(kind)})
        for name, kind in _SECTIONS.items()}
    lag, dlq, rec, ctr, speed, broker = (sections[n] for n in _SECTIONS)
    d_lag, d_dlq, d_rec, d_ctr, d_speed = (LagLimits(), DlqLimits(), ReconciliationSettings(),
                                           CtrReconciliationSettings(), ThroughputLimits())
    where = f"{source}: lag"
    window = _CHECK.whole(f"{where}.window_samples", lag.get("window_samples", d_lag.window_samples), 2, 1000)
    breach = _CHECK.whole(f"{where}.breach_samples", lag.get("breach_samples", d_lag.breach_samples), 1, window)
    return HealthConfig(
        lag=LagLimits(
            groups=_patterns(f"{where}.groups", lag.get("groups", list(d_lag.groups))),
            exclude=_patterns(f"{where}.exclude", lag.get("exclude", [])),
            max_records=_CHECK.whole(f"{where}.max_records", lag.get("max_records", d_lag.max_records), 0),
            max_seconds=_CHECK.seconds(f"{where}.max_seconds", lag.get("max_seconds", d_lag.max_seconds)),
            stall_after_s=_CHECK.seconds(f"{where}.stall_after_s", lag.get("stall_after_s", d_lag.stall_after_s)),
            window_samples=window,
            breach_samples=breach,
            max_sample_age_s=_CHECK.seconds(f"{where}.max_sample_age_s",
                                            lag.get("max_sample_age_s", d_lag.max_sample_age_s)),
        ),
        dlq=DlqLimits(
            max_ratio=_CHECK.fraction(f"{source}: dlq.max_ratio", dlq.get("max_ratio", d_dlq.max_ratio)),
            min_rows=_CHECK.whole(f"{source}: dlq.min_rows", dlq.get("min_rows", d_dlq.min_rows), 0),
        ),
        reconciliation=ReconciliationSettings(
            lookback_hours=_CHECK.whole(f"{source}: reconciliation.lookback_hours",
                                        rec.get("lookback_hours", d_rec.lookback_hours), 1, 24 * 366),
            scan_margin_s=_CHECK.seconds(f"{source}: reconciliation.scan_margin_s",
                                         rec.get("scan_margin_s", d_rec.scan_margin_s)),
        ),
        ctr_reconciliation=CtrReconciliationSettings(
            lookback_hours=_CHECK.whole(f"{source}: ctr_reconciliation.lookback_hours",
                                        ctr.get("lookback_hours", d_ctr.lookback_hours), 1, 24 * 366),
            settle_s=_CHECK.seconds(f"{source}: ctr_reconciliation.settle_s", ctr.get("settle_s", d_ctr.settle_s)),
        ),
        throughput=ThroughputLimits(
            recent_runs=_CHECK.whole(f"{source}: throughput.recent_runs", speed.get("recent_runs", d_speed.recent_runs), 1, 1000),
            ingest_min_rows_per_s=_CHECK.seconds(f"{source}: throughput.ingest_min_rows_per_s",
                                                 speed.get("ingest_min_rows_per_s", d_speed.ingest_min_rows_per_s)),
            ingest_min_rows=_CHECK.whole(f"{source}: throughput.ingest_min_rows",
                                         speed.get("ingest_min_rows", d_speed.ingest_min_rows), 0),
            processor_min_records_per_s=_CHECK.seconds(
                f"{source}: throughput.processor_min_records_per_s",
                speed.get("processor_min_records_per_s", d_speed.processor_min_records_per_s)),
            processor_groups=_patterns(f"{source}: throughput.processor_groups",
                                       speed.get("processor_groups", list(d_speed.processor_groups))),
        ),
        broker=BrokerLimits(
            min_brokers=_CHECK.whole(f"{source}: broker.min_brokers", broker.get("min_brokers", 1), 1, 1000)),
        report_uri=_CHECK.text(f"{source}: report_uri", top.get("report_uri", HealthConfig.report_uri)),
        state_uri=_CHECK.text(f"{source}: state_uri", top.get("state_uri", HealthConfig.state_uri)),
        source=source,
    )


def load_health_config(path: str | Path | None = None) -> HealthConfig:
    """Read and check the settings file (default: :func:`include.paths.settings_file`); one sentence if wrong."""
    path = Path(path) if path is not None else settings_file(DEFAULT_CONFIG_PATH.name)
    document = read_yaml_file(path, HealthConfigError, "health settings file")
    return parse_health_config(document, str(path))
