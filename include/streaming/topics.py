"""ensure_topics for the stream pipelines, to create missing ones on a fresh broker.

The declared stream topics are named only in include/config/topics.yaml; code asks for them by
role (:func:`include.kafka_admin.catalog.topic_for`).
"""

from __future__ import annotations

from include.kafka_admin.topics import ensure_topics

__all__ = ["ensure_topics"]
