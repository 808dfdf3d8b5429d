"""Reading rendered DAG params as people mean them."""

from __future__ import annotations

from typing import Any


def as_bool(value: Any) -> bool:
    """Template-rendered params may arrive as strings ("False"); read them as people mean them."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)
