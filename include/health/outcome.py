"""What a health check found: passed or failed, in one sentence, with its table, figures and series."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from include.errors import PermanentError


class CheckFailed(PermanentError):
    """A check found the pipeline unhealthy; the message says what, by how much and where to look.

    Permanent: retrying the check a minute later does not make the finding go away, and the next
    scheduled run checks again.
    """


@dataclass(frozen=True)
class Metric:
    """One figure for Prometheus: ``avazu_pipeline_<name>{labels} value``."""

    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)
    help: str = ""


@dataclass
class CheckOutcome:
    """A check's finding; JSON-ready (XCom, the report) via :meth:`as_dict`."""

    check: str
    ok: bool
    summary: str  # one sentence; for a failure: what is wrong, by how much and where to look
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    # Named series for the report's plots, e.g. {"lag": [...]} (see include.health.report).
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def status(self) -> str:
        return "pass" if self.ok else "FAIL"

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise CheckFailed(f"{self.check}: {self.summary}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckOutcome:
        values = dict(data)
        values["metrics"] = [Metric(**m) for m in values.get("metrics", [])]
        return cls(**values)


def first_problems(problems: list[str], limit: int = 3) -> str:
    """The first ``limit`` problems joined, and how many more there are."""
    shown = "; ".join(problems[:limit])
    return shown + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")
